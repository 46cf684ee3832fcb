"""What the tests that run torch.distributed share: a free port, two gloo ranks, DDP steps on one rank."""
import os
import socket
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _run_rank(rank: int, fn: Callable[[int, str], None], port: int, out_dir: str) -> None:
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    try:
        fn(rank, out_dir)
    finally:
        dist.destroy_process_group()


def spawn_two_gloo_ranks(fn: Callable[[int, str], None], out_dir: str) -> None:
    """Run ``fn(rank, out_dir)`` in two processes joined in one gloo group (``fn``: a module-level function)."""
    mp.spawn(_run_rank, args=(fn, free_port(), str(out_dir)), nprocs=2, join=True)


def ddp_steps_without_unused_parameters(model: torch.nn.Module, images: Callable[[], torch.Tensor],
                                        steps: int = 2) -> None:
    """SGD steps of ``model`` under single-process DDP with ``find_unused_parameters=False``.

    DDP raises in the second step when a trainable parameter got no gradient in the first, so this fails for
    a model that builds parameters its forward never uses. ``model`` returns ``{task: [maps]}``.
    """
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port()))
    dist.init_process_group('gloo', rank=0, world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
        opt = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=1e-3)
        for _ in range(steps):
            opt.zero_grad()
            outs = ddp(images())
            sum(o.mean() for maps in outs.values() for o in maps).backward()
            opt.step()
    finally:
        dist.destroy_process_group()
