"""Distributed training without CUDA: gloo process group and a CPU DDP wrapper.

mmengine 0.10.7 calls ``torch.cuda.set_device`` in ``init_dist``
(``mmengine/dist/utils.py:130``) and passes ``device_ids=[LOCAL_RANK]`` to DDP
(``runner.py:900``), so ``--launcher pytorch`` fails on CPU. The recipe of
shared/docs/openmmlab-notes.md §4.9: initialise a gloo group before the
Runner (``Runner.setup_env`` then skips ``init_dist``), wrap with
``device_ids=None``, and use BN rather than SyncBN.
"""
import os

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log


def _replace_syncbn(node) -> int:
    count = 0
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _replace_syncbn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_syncbn(value)
    return count


def setup_cpu_distributed(cfg: Config) -> bool:
    """Prepare a ``--launcher pytorch`` run on a machine without CUDA.

    Initialises the gloo process group from torchrun's environment, sets a DDP
    wrapper without ``device_ids`` and replaces SyncBN by BN in the model
    config. Does nothing (returns False) when CUDA is available.
    """
    if torch.cuda.is_available():
        return False
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch needs the torchrun environment ({missing} missing); '
                           'start with tools/dist_train.sh CONFIG NUM_PROCESSES')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.update(type=wrapper.get('type', 'MMDistributedDataParallel'), device_ids=None,
                   broadcast_buffers=False, find_unused_parameters=wrapper.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    replaced = _replace_syncbn(cfg.model)
    print_log(f'[ditask_mm] CPU distributed run: gloo, rank {dist.get_rank()}/{dist.get_world_size()}'
              + (f', {replaced} SyncBN -> BN' if replaced else ''), logger='current')
    return True


def shutdown_distributed() -> None:
    """Wait for every rank and destroy the process group, if one exists.

    Leaving a gloo group to the interpreter's exit can abort a rank
    ("terminate called without an active exception") after the work is done.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
