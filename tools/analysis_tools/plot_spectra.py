#!/usr/bin/env python
"""Plot what DiTASK did to each adapted matrix's singular values.

For every ``DiTASKLinear`` of the model (optionally filtered by ``--layers``,
a regular expression searched in the module name, and capped by
``--max-layers``) writes ``<module_name_with_underscores>.png`` with

(a) the pretrained singular values σ (one line per q/k/v split of a fused qkv)
    and the adapted σ' of the shared transform and of each task transform,
    log-scale y;
(b) the CPAB warp φ_θ on [0, 1] of the shared θ and of each task θ, with the
    identity dashed.

Also writes ``summary.png``, the relative change ‖σ' − σ‖ / ‖σ‖ (over all
splits) of every transform of every layer as a bar chart, and
``spectra.json`` with those numbers. A transform at θ = 0 is the identity, so
its relative change is 0.

Example::

    python tools/analysis_tools/plot_spectra.py CONFIG CKPT --out work_dirs/x/spectra --layers 'stages\\.3'
"""
import argparse
import json
import os
import os.path as osp
import re
import sys
from typing import Dict, List

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SPLIT_NAMES = {3: ('q', 'k', 'v')}
SPLIT_STYLES = ('-', '--', ':')


def save_figure(fig, path: str) -> None:
    """Write ``fig`` to ``path`` atomically and close it."""
    tmp = f'{path}.tmp.png'
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def plot_layer(name: str, layer, curves: Dict[str, dict], path: str) -> None:
    """Panels (a) spectra and (b) warps of one layer (``curves``: :func:`ditask_mm.analysis.spectrum_curves`)."""
    fig, (ax_s, ax_w) = plt.subplots(1, 2, figsize=(11, 4.2))
    splits = layer.num_splits
    labels = SPLIT_NAMES.get(splits, tuple(f'block {i}' for i in range(splits)) if splits > 1 else ('',))
    sigma = layer.svd.S.double().cpu().numpy()
    index = np.arange(1, sigma.shape[1] + 1)
    for s in range(splits):
        suffix = f' ({labels[s]})' if labels[s] else ''
        ax_s.plot(index, sigma[s], color='black', lw=2.2, ls=SPLIT_STYLES[s % 3], label=f'pretrained σ{suffix}')
    x = np.linspace(0, 1, 201)
    ax_w.plot(x, x, color='grey', ls='--', lw=1, label='identity')
    for i, (transform, data) in enumerate(curves.items()):
        color = f'C{i}'
        for s in range(splits):
            suffix = f' ({labels[s]})' if labels[s] else ''
            ax_s.plot(index, data['sigma_adapted'][s], color=color, lw=1.2, ls=SPLIT_STYLES[s % 3],
                      label=f"σ' {transform}{suffix}")
        ax_w.plot(x, data['phi'], color=color, lw=1.4, label=f"{transform} (Δ={data['rel_change']:.2%})")
    ax_s.set_yscale('log')
    ax_s.set_xlabel('index i')
    ax_s.set_ylabel('singular value')
    ax_s.set_title('(a) spectrum')
    ax_s.legend(fontsize=7, ncol=2 if len(curves) * splits > 6 else 1)
    ax_w.set_xlim(0, 1)
    ax_w.set_ylim(0, 1)
    ax_w.set_aspect('equal')
    ax_w.set_xlabel('x')
    ax_w.set_ylabel('φθ(x)')
    ax_w.set_title('(b) CPAB warp φθ')
    ax_w.legend(fontsize=7, loc='upper left')
    fig.suptitle(f'{name}  ({layer.out_features}×{layer.in_features}, {layer.spectrum_mode})', fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def plot_summary(rows: List[tuple], path: str) -> None:
    """Bar chart of every transform's relative spectrum change (``rows``: ``(layer, {transform: change})``)."""
    names = [name for name, _ in rows]
    transforms = list(dict.fromkeys(t for _, changes in rows for t in changes))
    height = 0.8 / max(len(transforms), 1)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.16 * len(rows) * max(1, len(transforms) / 2)))
    positions = np.arange(len(rows))
    labelled = set()
    for row, (_, changes) in enumerate(rows):  # each layer's bars centred on its own label
        for j, (transform, value) in enumerate(changes.items()):
            i = transforms.index(transform)
            ax.barh(row + (j - (len(changes) - 1) / 2) * height, value, height=height, color=f'C{i}',
                    label=None if transform in labelled else transform)
            labelled.add(transform)
    ax.set_yticks(positions, [n.replace('backbone.', '') for n in names], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("relative change ‖σ' − σ‖ / ‖σ‖")
    ax.set_title('DiTASK: spectrum change per adapted layer')
    ax.legend(fontsize=7)
    ax.grid(axis='x', alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description='Plot pretrained and adapted singular values of DiTASK layers')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--layers', help='regular expression searched in the module names')
    parser.add_argument('--max-layers', type=int, help='plot at most this many layers')
    args = parser.parse_args()

    from ditask_mm.adapters import DiTASKLinear, adapter_layers
    from ditask_mm.analysis import spectrum_curves
    from ditask_mm.apis import init_model
    from ditask_mm.models.checkpoint_fit import CheckpointMismatchError
    from ditask_mm.models.checkpoint_file import CheckpointReadError
    from ditask_mm.models.model_checkpoint import PretrainedWeightsError

    try:
        model = init_model(args.config, args.checkpoint)
    except (CheckpointMismatchError, CheckpointReadError, PretrainedWeightsError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    pattern = re.compile(args.layers) if args.layers else None
    layers = [(n, m) for n, m in adapter_layers(model)
              if isinstance(m, DiTASKLinear) and (pattern is None or pattern.search(n))]
    if args.max_layers is not None:
        layers = layers[:args.max_layers]
    if not layers:
        print('error: no DiTASKLinear layer matches' + (f' {args.layers!r}' if args.layers else ''), file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    rows, report = [], {}
    for i, (name, layer) in enumerate(layers, 1):
        curves = spectrum_curves(layer)
        png = name.replace('.', '_') + '.png'
        plot_layer(name, layer, curves, osp.join(args.out, png))
        changes = {t: c['rel_change'] for t, c in curves.items()}
        rows.append((name, changes))
        report[name] = dict(png=png, shape=[layer.out_features, layer.in_features], num_splits=layer.num_splits,
                            spectrum_mode=layer.spectrum_mode, relative_change=changes)
        if i % 10 == 0 or i == len(layers):
            print(f'[{i}/{len(layers)}] {name}', flush=True)
    plot_summary(rows, osp.join(args.out, 'summary.png'))
    tmp = osp.join(args.out, 'spectra.json.tmp')
    with open(tmp, 'w') as f:
        json.dump(dict(config=osp.abspath(args.config), checkpoint=osp.abspath(args.checkpoint), layers=report),
                  f, indent=1)
    os.replace(tmp, osp.join(args.out, 'spectra.json'))
    print(f'wrote {len(layers)} layer plots, summary.png and spectra.json to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
