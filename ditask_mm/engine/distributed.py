"""Distributed training without CUDA: gloo process group and a CPU DDP wrapper.

mmengine 0.10.7 calls ``torch.cuda.set_device`` in ``init_dist``
(``mmengine/dist/utils.py:130``) and passes ``device_ids=[LOCAL_RANK]`` to DDP
(``runner.py:900``), so ``--launcher pytorch`` fails on CPU. The recipe of
``docs/install.md`` ("Distributed training without CUDA"): initialise a gloo group before the
Runner (``Runner.setup_env`` then skips ``init_dist``), wrap with
``device_ids=None``, and use BN rather than SyncBN.

The group is set up from the launcher's environment: torchrun's
(``--launcher pytorch``), SLURM's (``--launcher slurm``, under ``srun``) or
Open MPI's (``--launcher mpi``, under ``mpirun``); see :func:`launcher_env`.
"""
import os
import shutil
import subprocess
from typing import Dict, Mapping, Optional

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


DEFAULT_MASTER_PORT = '29500'
_SLURM_VARS = ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID')
_MPI_VARS = ('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_RANK')


def _first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[01-04]`` → ``node01``), via ``scontrol``."""
    if shutil.which('scontrol') is None:
        raise RuntimeError(f'--launcher slurm: MASTER_ADDR is not set and scontrol is not on PATH to read '
                           f'the first host of SLURM_NODELIST={nodelist!r}; set MASTER_ADDR (and '
                           'MASTER_PORT) to the first node of the job')
    proc = subprocess.run(['scontrol', 'show', 'hostnames', nodelist], capture_output=True, text=True, timeout=60)
    hosts = proc.stdout.split()
    if proc.returncode != 0 or not hosts:
        raise RuntimeError(f'--launcher slurm: `scontrol show hostnames {nodelist}` failed '
                           f'({proc.stderr.strip() or "no hosts"}); set MASTER_ADDR to the first node of the job')
    return hosts[0]


def launcher_env(launcher: str, environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` of a launcher.

    Args:
        launcher: ``'pytorch'`` (torchrun's variables, taken as they are),
            ``'slurm'`` (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``;
            ``MASTER_ADDR`` from the environment or the first host of
            ``scontrol show hostnames $SLURM_NODELIST``) or ``'mpi'``
            (``OMPI_COMM_WORLD_RANK``/``SIZE``/``LOCAL_RANK``, ``MASTER_ADDR``
            from the environment). ``MASTER_PORT`` defaults to 29500 for
            slurm and mpi.
        environ: The environment to read; ``os.environ`` by default.

    Raises:
        RuntimeError: The launcher's variables are missing, with how to start
            such a run.
        ValueError: An unknown launcher.
    """
    env = os.environ if environ is None else environ
    if launcher == 'pytorch':
        missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in env]
        if missing:
            raise RuntimeError(f'--launcher pytorch needs the torchrun environment ({missing} missing); '
                               'start with tools/dist_train.sh CONFIG NUM_PROCESSES')
        return dict(RANK=env['RANK'], WORLD_SIZE=env['WORLD_SIZE'], LOCAL_RANK=env.get('LOCAL_RANK', '0'),
                    MASTER_ADDR=env['MASTER_ADDR'], MASTER_PORT=env['MASTER_PORT'])
    if launcher == 'slurm':
        missing = [k for k in _SLURM_VARS if k not in env]
        if 'MASTER_ADDR' not in env and 'SLURM_NODELIST' not in env:
            missing.append('SLURM_NODELIST (or MASTER_ADDR)')
        if missing:
            raise RuntimeError(f'--launcher slurm must run under srun: {"/".join(missing)} missing; start with '
                               '`srun ... python tools/train.py CONFIG --launcher slurm` or use '
                               'tools/dist_train.sh CONFIG NUM_PROCESSES (torchrun)')
        addr = env.get('MASTER_ADDR') or _first_slurm_host(env['SLURM_NODELIST'])
        return dict(RANK=env['SLURM_PROCID'], WORLD_SIZE=env['SLURM_NTASKS'], LOCAL_RANK=env['SLURM_LOCALID'],
                    MASTER_ADDR=addr, MASTER_PORT=env.get('MASTER_PORT', DEFAULT_MASTER_PORT))
    if launcher == 'mpi':
        missing = [k for k in (*_MPI_VARS, 'MASTER_ADDR') if k not in env]
        if missing:
            raise RuntimeError(f'--launcher mpi must run under Open MPI\'s mpirun with MASTER_ADDR set: '
                               f'{"/".join(missing)} missing; start with `mpirun -np N -x MASTER_ADDR=HOST '
                               '-x MASTER_PORT=PORT python tools/train.py CONFIG --launcher mpi` or use '
                               'tools/dist_train.sh CONFIG NUM_PROCESSES (torchrun)')
        return dict(RANK=env['OMPI_COMM_WORLD_RANK'], WORLD_SIZE=env['OMPI_COMM_WORLD_SIZE'],
                    LOCAL_RANK=env['OMPI_COMM_WORLD_LOCAL_RANK'], MASTER_ADDR=env['MASTER_ADDR'],
                    MASTER_PORT=env.get('MASTER_PORT', DEFAULT_MASTER_PORT))
    raise ValueError(f'launcher {launcher!r}: expected pytorch, slurm or mpi')


def setup_cpu_distributed(cfg: Config, launcher: Optional[str] = None) -> bool:
    """Prepare a distributed run (``--launcher pytorch/slurm/mpi``) on a machine without CUDA.

    Initialises the gloo process group from the launcher's environment
    (:func:`launcher_env`, exported as ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``), sets a DDP wrapper
    without ``device_ids`` and replaces SyncBN by BN in the model config.
    Does nothing (returns False) when CUDA is available.

    Args:
        cfg: The run config (changed in place).
        launcher: ``'pytorch'``, ``'slurm'`` or ``'mpi'``; defaults to
            ``cfg.launcher`` (set by ``tools/train.py``), else ``'pytorch'``.
    """
    if torch.cuda.is_available():
        return False
    launcher = launcher or cfg.get('launcher') or 'pytorch'
    os.environ.update(launcher_env(launcher))
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
