"""What the benchmark scripts share: model building, random batches, timing, FLOPs, memory, JSON output.

A script run as ``python tools/benchmarks/x.py`` has this directory first on
``sys.path``, so ``import bench_utils`` needs no path manipulation.

It also holds the public code's per-call SVD, which only the benchmarks
measure: :func:`per_call_svd_layer_class` returns a ``DiTASKLinear`` that
recomputes the SVD of its frozen weight on every call, as the public layer
does (``docs/fidelity.md``), registered as ``PerCallSVDDiTASKLinear`` so that
a config can select it with ``model.backbone.adapter.type=PerCallSVDDiTASKLinear``.
"""
import functools
import json
import os
import statistics
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DITASK = 'configs/ditask/swin-t_pascal-mtl.py'
CLEAN = 'configs/ditask/swin-t_pascal-mtl_clean.py'
PROGRESSIVE = 'configs/ditask/swin-t_pascal-mtl_progressive.py'
PROGRESSIVE_TREE = 'configs/ditask/swin-t_pascal-mtl_progressive-tree.py'
#: ``--cfg-options`` entry that makes a DiTASK model recompute every SVD on every call (the public code's cost).
PER_CALL_SVD_OPTION = 'model.backbone.adapter.type=PerCallSVDDiTASKLinear'
#: The loss balancers the ``balance_*`` variants set (``model.loss_balancer.type``), by variant name: loss-level
#: first (one backward pass), then gradient-level (one backward pass per task over the shared parameters).
BALANCER_VARIANTS = {
    'balance_fixed': 'FixedWeights',
    'balance_uncertainty': 'UncertaintyWeighting',
    'balance_dwa': 'DWA',
    'balance_famo': 'FAMO',
    'balance_pcgrad': 'PCGrad',
    'balance_mgda': 'MGDA',
    'balance_cagrad': 'CAGrad',
    'balance_aligned_mtl': 'AlignedMTL',
    'balance_upgrad': 'UPGrad',
}


# ------------------------------------------------------------- per-call SVD
@functools.lru_cache(maxsize=None)
def per_call_svd_layer_class() -> type:
    """The registered ``PerCallSVDDiTASKLinear`` class (defined and registered on the first call).

    Same results as ``DiTASKLinear``; per call it recomputes the SVD of the
    frozen weight for every spectrum it warps, keeps no eval-mode weight
    cache, chooses dense or factored products by FLOPs in eval mode too, and
    is left out of :func:`~ditask_mm.adapters.batched_spectra` (it computes
    its own spectra, one CPAB call per path).
    """
    import torch

    from ditask_mm.adapters import DiTASKLinear, spectrum_batch
    from ditask_mm.adapters.svd_cache import factored_is_cheaper
    from ditask_mm.registry import MODELS

    class PerCallSVDDiTASKLinear(DiTASKLinear):
        """``DiTASKLinear`` doing the public code's SVD of the frozen weight on every call."""

        def adapted_spectrum(self, task=None):
            self.check_task(task)
            self.svd.refresh(self.weight)
            return super().adapted_spectrum(task)

        def adapted_weight(self, task=None):
            self._eval_weights.clear()  # the public code rebuilds the weight on every call
            try:
                return super().adapted_weight(task)
            finally:
                self._eval_weights.clear()

        def _use_factored(self, x, task) -> bool:
            if self.compute_mode != 'auto':
                return self.compute_mode == 'factored'
            _, theta = self._transform_and_theta(task)
            needs_grad = torch.is_grad_enabled() and theta.requires_grad
            rows = self.out_features // self.num_splits
            return factored_is_cheaper(x.numel() // self.in_features, rows, self.in_features,
                                       min(rows, self.in_features), needs_grad)

    MODELS.register_module(module=PerCallSVDDiTASKLinear, force=True)
    batched = spectrum_batch.compute_spectra

    def compute_spectra_without_per_call_layers(layers):
        return batched([layer for layer in layers if not isinstance(layer, PerCallSVDDiTASKLinear)])

    spectrum_batch.compute_spectra = compute_spectra_without_per_call_layers  # what batched_spectra calls
    return PerCallSVDDiTASKLinear


# ------------------------------------------------------------------- models
def parse_options(options: Sequence[str]) -> Optional[Dict]:
    """``key=value`` overrides as ``--cfg-options`` parses them (mmengine's ``DictAction``).

    Args:
        options: Entries such as ``'model.loss_balancer.type=PCGrad'``.

    Returns:
        The nested override dict, or ``None`` when ``options`` is empty.

    Raises:
        ValueError: An entry is not of the form ``key=value``.
    """
    import argparse

    from mmengine.config import DictAction
    if not options:
        return None
    malformed = [option for option in options if '=' not in option]
    if malformed:
        raise ValueError(f'config overrides must be key=value (as --cfg-options takes them), got {malformed}')
    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction)
    return parser.parse_args(['--o', *options]).o


def build_model(config: str, options: Sequence[str] = (), device: str = 'cpu', branched_full_ft: bool = False):
    """Build a config's model (seed 0, no pretrained weights) on ``device``, in training mode.

    Args:
        config: Config path, absolute or relative to the repository root.
        options: ``key=value`` overrides, as ``--cfg-options`` takes them
            (:data:`PER_CALL_SVD_OPTION` selects the per-call SVD layer).
        device: Torch device string.
        branched_full_ft: Merge the adapters into plain shared and per-task
            weights (``merge_adapters``) and make every parameter trainable:
            full fine-tuning of the model's own task-branched architecture.

    Returns:
        The model.
    """
    import torch

    from ditask_mm.adapters import merge_adapters
    from ditask_mm.apis import init_model
    per_call_svd_layer_class()  # registered, so that PER_CALL_SVD_OPTION can name it
    torch.manual_seed(0)
    model = init_model(os.path.join(ROOT, config), device=device, cfg_options=parse_options(options),
                       init_weights=False)
    if branched_full_ft:
        merge_adapters(model)
        model.requires_grad_(True)
    return model.train()


def random_batch(tasks: Iterable[str], batch: int, size: int, seed: int = 0) -> Dict:
    """A ``train_step``/``test_step`` batch of ``batch`` random ``size``² images with targets of every task."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from ditask_mm.tasks import TASKS
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(ori_shape=(size, size), img_shape=(size, size)))
        for task in tasks:
            spec = TASKS[task]
            if spec.kind == 'labels':
                data = torch.randint(0, 7, (1, size, size), generator=g)
            elif spec.kind == 'binary':
                data = (torch.rand(1, size, size, generator=g) > 0.5).float()
            elif spec.kind == 'vectors':
                data = torch.nn.functional.normalize(torch.randn(3, size, size, generator=g), dim=0)
            else:
                data = torch.rand(1, size, size, generator=g) * 10
            sample.set_field(PixelData(data=data), spec.gt_key)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


# ------------------------------------------------------------------ measuring
def timed(fn: Callable[[], object], iters: int, warmup: int, sync: Callable[[], None]) -> float:
    """Median milliseconds of ``iters`` calls of ``fn`` after ``warmup`` untimed ones."""
    return timed_wall_and_cpu(fn, iters, warmup, sync)[0]


def timed_wall_and_cpu(fn: Callable[[], object], iters: int, warmup: int,
                       sync: Callable[[], None]) -> Tuple[float, float]:
    """Median wall and median process-CPU milliseconds of ``iters`` calls of ``fn`` after ``warmup`` untimed ones.

    The CPU time (``time.process_time``: every thread of this process, user
    and system) is what a step costs when other processes share the cores:
    with one torch thread it equals the wall time on an idle machine and,
    unlike the wall time, does not grow while the process waits for a core.
    With several threads it also counts the threads' spin-waiting.
    """
    for _ in range(warmup):
        fn()
    wall: List[float] = []
    cpu: List[float] = []
    for _ in range(iters):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn``, as ``FlopCounterMode`` counts them (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def current_rss() -> int:
    """This process's resident memory in bytes."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def reset_peak_rss() -> bool:
    """Reset the peak RSS (``VmHWM``) through ``/proc/self/clear_refs``; whether that worked."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """This process's peak resident memory in bytes (since the last :func:`reset_peak_rss`)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -------------------------------------------------------------------- output
def write_json_atomic(path: str, obj) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file (never a partial file)."""
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)

