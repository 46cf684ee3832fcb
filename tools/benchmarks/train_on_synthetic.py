#!/usr/bin/env python
"""Train several methods on the generated PASCAL_MT data with the main job's schedule, and compare them.

Each variant keeps its own backbone (adapter, task groups, trainable policy,
from its PASCAL config) and its loss balancer (``model.loss_balancer``, with
the ``optim_wrapper.paramwise_cfg.custom_keys`` entries naming
``loss_balancer``, e.g. no weight decay on UncertaintyWeighting's
log-variances), and takes everything else from the main job's DiTASK
fine-tuning config (configs/main_job/ditask_swin-t_synthetic-mtl_from-standin.py):
data, 128² pipelines, heads, losses, optimizer, 8-epoch schedule, seed, and the
stand-in pretrained Swin-T that ``bash tools/main.sh`` writes. Per variant it
runs ``tools/train.py`` and ``tools/test.py`` on the best checkpoint (their
logs go to ``WORK_DIR/<variant>/{train,test}.log``), then
``tools/analysis_tools/compare_runs.py`` prints every metric and Δm side by
side (Δm against the PASCAL single-task numbers: on generated data only the
comparison between the runs means something).

Variants are the names of ``bench_train_step.py`` (``ditask``, ``ditask_clean``,
``ditask_progressive``, ``balance_pcgrad``, ...; a name's config overrides are
applied to its PASCAL config first) or PASCAL config paths. Not trainable
here: ``ditask_per_call_svd`` (its layer is registered by the benchmarks
only) and ``full_ft_branched`` (built by merging a model, not by a config).

Example::

    bash tools/main.sh   # once: the dataset and the stand-in checkpoint
    python tools/benchmarks/train_on_synthetic.py --variants ditask ditask_clean ditask_progressive \\
        ditask_progressive_tree progressive_lora mtlora_r64 full_ft --work-dir work_dirs/synthetic_variants
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

from bench_train_step import resolve
from bench_utils import PER_CALL_SVD_OPTION, ROOT, parse_options

MAIN_JOB = 'configs/main_job/ditask_swin-t_synthetic-mtl_from-standin.py'
STANDIN = 'work_dirs/main/standin/swin_official.pth'
#: Backbone keys the main job sets for its 128² stand-in (kept whatever the variant says).
MAIN_JOB_BACKBONE_KEYS = ('init_cfg', 'drop_path_rate')


def balancer_custom_keys(variant_cfg) -> Dict[str, dict]:
    """The ``optim_wrapper.paramwise_cfg.custom_keys`` entries of a config that name ``loss_balancer``."""
    paramwise = (variant_cfg.get('optim_wrapper') or {}).get('paramwise_cfg') or {}
    custom_keys = paramwise.get('custom_keys') or {}
    return {key: dict(value) for key, value in custom_keys.items() if 'loss_balancer' in key}


def write_run_config(variant_config: str, path: Path, standin: str, options: Sequence[str] = ()) -> Path:
    """The main job's config with ``variant_config``'s backbone and loss balancer, written to ``path``.

    Args:
        variant_config: The variant's PASCAL config, relative to the
            repository root or absolute.
        path: Where to write the run's config.
        standin: The stand-in pretrained Swin-T checkpoint the backbone loads.
        options: ``key=value`` overrides applied to ``variant_config`` first
            (a ``bench_train_step.py`` variant's, e.g.
            ``model.loss_balancer.type=PCGrad``).

    Returns:
        ``path``. The config inherits the main job and replaces its backbone
        (the main job's ``init_cfg`` and ``drop_path_rate`` kept, the
        checkpoint set to ``standin``); a ``model.loss_balancer`` of the
        variant is carried over with its ``loss_balancer`` custom keys.
    """
    from mmengine.config import Config
    main, variant = Config.fromfile(os.path.join(ROOT, MAIN_JOB)), Config.fromfile(os.path.join(ROOT, variant_config))
    overrides = parse_options(options)
    if overrides:
        variant.merge_from_dict(overrides)
    backbone = dict(variant.model.backbone.to_dict())
    for key in MAIN_JOB_BACKBONE_KEYS:
        backbone[key] = main.model.backbone[key]
    backbone['init_cfg'] = dict(type='Pretrained', checkpoint=standin)
    balancer = variant.model.get('loss_balancer')
    model_entries = f'backbone=dict(_delete_=True, **{backbone!r})'
    if balancer is not None:
        model_entries += f', loss_balancer={balancer.to_dict()!r}'
    lines = [f'# {variant_config} backbone{" and loss balancer" if balancer is not None else ""}'
             + (f' ({" ".join(options)})' if options else '') + f' on the main job ({MAIN_JOB}), '
             f'written by {Path(__file__).name}',
             f"_base_ = ['{os.path.join(ROOT, MAIN_JOB)}']",
             f'model = dict({model_entries})']
    custom_keys = balancer_custom_keys(variant)
    if custom_keys:
        lines.append(f'optim_wrapper = dict(paramwise_cfg=dict(custom_keys={custom_keys!r}))')
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp')
    tmp.write_text('\n'.join(lines) + '\n')
    os.replace(tmp, path)
    return path


def run(args: List[str], log: Path = None) -> None:
    """Run a tool of the repository; with ``log``, its output goes there (its last lines are shown if it fails)."""
    print('+', ' '.join(args) + (f'  (log: {log})' if log else ''), file=sys.stderr, flush=True)
    if log is None:
        subprocess.run([sys.executable, *args], cwd=ROOT, check=True)
        return
    with open(log, 'w') as stream:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = ''.join(Path(log).read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f'{args[0]} failed (exit {proc.returncode}); the end of {log}:\n{tail}')


def main() -> int:
    """Parse the command line; train and test each variant on the generated data, then compare the runs."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--variants', nargs='+', required=True, help='bench_train_step.py names or config paths')
    parser.add_argument('--work-dir', default='work_dirs/synthetic_variants')
    parser.add_argument('--standin', default=STANDIN, help='the stand-in official Swin-T checkpoint (tools/main.sh)')
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(ROOT, args.standin)):
        parser.error(f'{args.standin} does not exist; run `bash tools/main.sh` first (it writes it), '
                     'or pass --standin PATH')
    work = Path(args.work_dir)
    variants = [resolve(token) for token in args.variants]
    for variant in variants:
        if variant.branched_full_ft or PER_CALL_SVD_OPTION in variant.options:
            parser.error(f'{variant.name}: cannot be trained here (full_ft_branched merges a built model, '
                         'ditask_per_call_svd needs a layer only the benchmarks register); pick another variant '
                         'or a config file')
    for n, variant in enumerate(variants, 1):
        out = work / variant.name
        print(f'[{n}/{len(variants)}] {variant.name} ({variant.config})', file=sys.stderr, flush=True)
        config = write_run_config(variant.config, out / 'config.py', args.standin, variant.options)
        run(['tools/train.py', str(config), '--work-dir', str(out / 'train')], log=out / 'train.log')
        best = max((out / 'train').glob('best_delta_m_epoch_*.pth'), key=os.path.getmtime)
        run(['tools/test.py', str(config), str(best), '--work-dir', str(out / 'test')], log=out / 'test.log')
    names = [variant.name for variant in variants]
    if len(names) == 1:  # compare_runs.py needs two runs; one variant's metrics are its test metrics.json
        print(f'{names[0]}: metrics in {work / names[0] / "test"}/*/metrics.json (compare_runs.py needs two runs)',
              file=sys.stderr)
        return 0
    run(['tools/analysis_tools/compare_runs.py', *[str(work / n) for n in names], '--names', *names,
         '--out-dir', str(work)])
    return 0


if __name__ == '__main__':
    sys.exit(main())
