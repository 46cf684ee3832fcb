"""Load pretrained Swin Transformer checkpoints into an mmseg-named backbone.

Our Swin backbone uses the state-dict names of mmseg's ``SwinTransformer``
(``stages.i.blocks.j.attn.w_msa.qkv``, ``ffn.layers.0.0``, ``norm0..3``, ...)
plus adapter tensors (names containing ``theta_`` or ``lora_``). Checkpoints
come in four layouts:

* ``official`` (Microsoft ``swin_*_22k.pth``, ``{'model': ...}``):
  ``layers.i.blocks.j.attn.qkv``, ``mlp.fc1/fc2``, ``patch_embed.proj``; the
  PatchMerging of stage ``i`` is ``layers.i.downsample`` (end of the stage);
  one final ``norm``; buffers ``relative_position_index`` and ``attn_mask``;
  ``head`` (21841 classes for 22k files).
* ``timm`` (>= 0.9): the official names, but the PatchMerging that follows
  stage ``i`` is ``layers.{i+1}.downsample`` (start of the next stage) and the
  classifier is ``head.fc``; the index/mask buffers are not persistent.
  (timm < 0.9 files use the official layout and are read as ``official``.)
* ``mmseg`` / ``mmpretrain``: already our names (``stages.i.downsample`` at the
  end of stage ``i``). mmseg writes ``norm{i}`` for every output index,
  mmpretrain classifiers only ``norm3`` (old files: ``norm``) and ``head.fc``.

Official/timm PatchMerging concatenates the 2x2 neighbours as
``[x(0,0), x(1,0), x(0,1), x(1,1)]`` (row, col offsets) and each block holds
``C`` channels: input column ``q * C + c`` with ``q = row + 2 * col``.
mmseg/mmpretrain use ``nn.Unfold``, whose column is ``c * 4 + p`` with
``p = 2 * row + col``. Hence the reduction weight's columns and the merging
norm's weight/bias are gathered with ``idx[c * 4 + p] = q(p) * C + c`` where
``q(p) = (0, 2, 1, 3)[p]`` (see :func:`unfold_merge_index`).
"""
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger, print_log
from torch import nn

from ..checkpoint_file import state_dict_of
from .swin_checkpoint_checks import (SwinCheckpointMismatchError, coverage_error_message, fit_error_message,
                                     name_listing, read_pretrained_tensors, sort_checkpoint_tensors, swin_arch_of)

SWIN_FORMATS = ('official', 'mmseg', 'mmpretrain', 'timm')
ADAPTER_MARKERS = ('theta_', 'lora_')
# Deterministic buffers every Swin recomputes at construction.
DERIVED_BUFFERS = ('relative_position_index', 'attn_mask', 'relative_coords_table')
_SELECT_PREFIXES = ('backbone.', 'encoder.')
_STRIP_PREFIXES = ('module.',)
_OUT_NORM = re.compile(r'^norm(\d+)\.')
_STAGE = re.compile(r'^(layers|stages)\.(\d+)\.')
_IN_MEMORY = '<in-memory state dict>'
#: Official/timm name → mmseg name of the patch embedding's convolution.
PATCH_EMBED_RENAME = ('patch_embed.proj.', 'patch_embed.projection.')
#: Official/timm → mmseg names inside a block, each replaced once at a name boundary (start or after a dot).
BLOCK_RENAMES = (('attn.', 'attn.w_msa.'), ('mlp.fc1.', 'ffn.layers.0.0.'), ('mlp.fc2.', 'ffn.layers.1.'))


def _backbone_view(state_dict: Mapping) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Strip ``module.`` and select the ``backbone.``/``encoder.`` sub-dict.

    Returns:
        The backbone tensors and the names of the tensors left out
        (e.g. ``decode_head.*``, ``head.fc.*`` of full-model checkpoints).
    """
    cur = state_dict_of(state_dict)
    dropped: List[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in _STRIP_PREFIXES + _SELECT_PREFIXES:
            if not any(k.startswith(prefix) for k in cur):
                continue
            if prefix in _SELECT_PREFIXES:
                dropped += [k for k in cur if not k.startswith(prefix)]
            cur = {k[len(prefix):] if k.startswith(prefix) else k: v
                   for k, v in cur.items() if k.startswith(prefix) or prefix in _STRIP_PREFIXES}
            changed = True
    return cur, dropped


def detect_swin_format(state_dict: Mapping) -> str:
    """Tell which Swin layout a checkpoint uses.

    Args:
        state_dict: Flat tensors (or a checkpoint container); ``module.``
            is stripped and a ``backbone.``/``encoder.`` sub-dict selected.

    Returns:
        One of ``'official'``, ``'mmseg'``, ``'mmpretrain'``, ``'timm'``.

    Raises:
        ValueError: If it is not a (v1) Swin Transformer checkpoint.
    """
    sd, dropped = _backbone_view(state_dict)
    keys = list(sd)
    has_blocks = any(re.match(r'^(layers|stages)\.\d+\.blocks\.\d+\.', k) for k in keys)
    has_table = any(k.endswith('relative_position_bias_table') for k in keys)
    if not (has_blocks and has_table) or any('cpb_mlp' in k or 'logit_scale' in k for k in keys):
        sample = (keys or list(state_dict))[:6]
        raise ValueError('not a Swin Transformer (v1) checkpoint: expected '
                         "'layers.N.blocks.M.attn...' or 'stages.N.blocks.M.attn.w_msa...' "
                         f'keys with relative_position_bias_table; first keys: {sample}')
    if any(k.startswith('stages.') for k in keys):
        # Same names; tell them apart by the heads (segmentor vs classifier),
        # then by the output norms (mmseg: one per out_index, mmpretrain: norm3).
        if any(k.startswith(('decode_head.', 'auxiliary_head.')) for k in dropped):
            return 'mmseg'
        if any(k.startswith(('head.', 'neck.')) for k in keys + dropped):
            return 'mmpretrain'
        if not any(re.match(r'^norm[0-2]\.', k) for k in keys) and any(
                k.startswith('norm3.') for k in keys):
            return 'mmpretrain'
        return 'mmseg'  # also the output of mmseg's swin2mmseg.py (final 'norm.')
    if any(re.match(r'^layers\.0\.downsample\.', k) for k in keys):
        return 'official'
    if any(re.match(r'^layers\.\d+\.downsample\.', k) for k in keys):
        return 'timm'
    # Single-stage network: fall back on buffers and the classifier name.
    if any(k.endswith(('relative_position_index', 'attn_mask')) or k.startswith('head.weight')
           for k in keys):
        return 'official'
    return 'timm'


def unfold_merge_index(channels: int) -> torch.Tensor:
    """Gather index from official/timm PatchMerging columns to nn.Unfold ones.

    Args:
        channels: Channels ``C`` of the merged feature map (the merging
            layer has ``4 * C`` inputs).

    Returns:
        ``idx`` of length ``4 * C`` with ``unfold_col = official_col[idx]``.
    """
    c = torch.arange(channels).repeat_interleave(4)
    p = torch.arange(4).repeat(channels)
    row, col = p // 2, p % 2
    q = row + 2 * col
    return q * channels + c


def _rename_layers_key(key: str, fmt: str) -> str:
    """Official/timm block and merging names to mmseg names."""
    m = _STAGE.match(key)
    stage, rest = int(m.group(2)), key[m.end():]
    if rest.startswith('downsample.') and fmt == 'timm':
        stage -= 1
    return f'stages.{stage}.{rename_at_boundary(rest, BLOCK_RENAMES)}'


def rename_at_boundary(name: str, renames) -> str:
    """Replace the first ``old`` of each ``(old, new)`` pair that starts ``name`` or follows a dot."""
    for old, new in renames:
        name = re.sub(r'(^|\.)' + re.escape(old), lambda m: m.group(1) + new, name, count=1)
    return name


def _final_stage(sd: Mapping) -> int:
    """Index of the last stage, which the final ``norm`` belongs to.

    Channels double per stage, so ``log2(norm dims / embed dims)`` answers
    even when the last stage's tensors are absent; else the highest index.
    """
    stages = [int(m.group(2)) for m in map(_STAGE.match, sd) if m]
    highest = max(stages) if stages else 0
    embed = next((v.shape[0] for k, v in sd.items() if k.startswith('patch_embed.proj')
                  and k.endswith('.weight')), None)
    if 'norm.weight' not in sd or not embed:
        return highest
    ratio = sd['norm.weight'].shape[0] // embed
    exact = ratio * embed == sd['norm.weight'].shape[0] and ratio & (ratio - 1) == 0
    return ratio.bit_length() - 1 if exact else highest


def convert_swin_state_dict(state_dict: Mapping,
                            fmt: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], str]:
    """Convert a Swin checkpoint to mmseg ``SwinTransformer`` names.

    Renames keys, shifts timm's downsample index, permutes PatchMerging
    columns for official/timm, maps the final ``norm`` to ``norm{last}`` and
    drops ``head.*``, ``neck.*`` and derived buffers (``relative_position_index``,
    ``attn_mask``).

    Args:
        state_dict: Checkpoint tensors (prefixes are handled as in
            :func:`detect_swin_format`).
        fmt: Source format; detected when ``None``.

    Returns:
        The converted tensors and the source format.

    Raises:
        ValueError: On an unknown ``fmt`` or a non-Swin checkpoint.
    """
    fmt = fmt or detect_swin_format(state_dict)
    if fmt not in SWIN_FORMATS:
        raise ValueError(f'unknown Swin checkpoint format {fmt!r}; expected one of {SWIN_FORMATS}')
    sd, _ = _backbone_view(state_dict)
    last = _final_stage(sd)
    out: Dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith(('head.', 'neck.')) or key.endswith(DERIVED_BUFFERS):
            continue
        if key.startswith('norm.'):
            key = f'norm{last}.' + key[len('norm.'):]
        elif fmt in ('official', 'timm'):
            if key.startswith(PATCH_EMBED_RENAME[0]):
                key = PATCH_EMBED_RENAME[1] + key[len(PATCH_EMBED_RENAME[0]):]
            elif key.startswith('layers.'):
                key = _rename_layers_key(key, fmt)
                if re.search(r'\.downsample\.(reduction\.weight|norm\.)', key):
                    idx = unfold_merge_index(value.shape[-1] // 4).to(value.device)
                    value = value.index_select(value.dim() - 1, idx)
        out[key] = value
    return out, fmt


def resize_relative_position_tables(state_dict: Dict[str, torch.Tensor],
                                    model_state: Mapping) -> List[str]:
    """Bicubically resize bias tables whose window differs from the model's.

    Each head's ``(2W-1) x (2W-1)`` grid is resampled with
    ``F.interpolate(mode='bicubic', align_corners=False)``; ``state_dict`` is
    updated in place. Tables that cannot be resized (different head counts,
    non-square grids) are left alone for the caller's shape check.

    Args:
        state_dict: Converted (mmseg-named) tensors.
        model_state: The model's state dict (or any ``{name: tensor}``).

    Returns:
        Names of the resized tables.
    """
    resized = []
    for key, table in list(state_dict.items()):
        if not key.endswith('relative_position_bias_table') or key not in model_state:
            continue
        target = model_state[key]
        if table.shape == target.shape:
            continue
        (len_src, heads), (len_dst, heads_dst) = table.shape, target.shape
        side_src, side_dst = round(len_src ** 0.5), round(len_dst ** 0.5)
        if heads != heads_dst or side_src ** 2 != len_src or side_dst ** 2 != len_dst:
            continue
        grid = table.float().t().reshape(1, heads, side_src, side_src)
        grid = F.interpolate(grid, size=(side_dst, side_dst), mode='bicubic', align_corners=False)
        state_dict[key] = grid.reshape(heads, len_dst).t().contiguous().to(table.dtype)
        resized.append(key)
    return resized


def _is_adapter(name: str) -> bool:
    return any(marker in name for marker in ADAPTER_MARKERS)


def _backbone_weights(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Parameters and persistent buffers, minus adapters and derived buffers."""
    return {k: v for k, v in model.state_dict().items()
            if not _is_adapter(k) and not k.endswith(DERIVED_BUFFERS)}


def _is_leftover(name: str) -> bool:
    """Output norms (a ``post_merge`` backbone has none) and adapters: not another architecture."""
    return bool(_OUT_NORM.match(name)) or _is_adapter(name)


def load_pretrained_swin(model: nn.Module,
                         checkpoint: Union[str, os.PathLike, Mapping],
                         min_fraction: float = 0.95,
                         logger: Optional[Union[logging.Logger, str]] = None) -> Dict[str, Any]:
    """Load a Swin checkpoint of any supported format into ``model``.

    The expected "backbone weights" are the model's parameters and persistent
    buffers except adapter tensors (``theta_``/``lora_``), derived buffers
    (``relative_position_index``, ``attn_mask``) and the output norms
    ``norm0..norm3`` absent from the converted checkpoint: official/timm files
    only hold the final norm (loaded as ``norm{last}``), mmpretrain classifiers
    only ``norm3``; the others keep their initialisation and are counted in
    the summary as ``out-norms at init``. Heads, necks and derived buffers
    are dropped by the conversion; output norms and adapters the model lacks
    are skipped (``unexpected``). Any other tensor the model lacks, or a shape
    that differs after the bias tables were resized, means another
    architecture. Nothing is loaded when a check fails.

    Args:
        model: Backbone with mmseg ``SwinTransformer`` state-dict names.
        checkpoint: Path/URL (read with
            :func:`~.swin_checkpoint_checks.read_pretrained_tensors`) or tensors.
        min_fraction: Least fraction (by element count) of the expected
            backbone weights that must load.
        logger: Logger for the one-line summary; the current MMLogger if None.

    Returns:
        ``{'format', 'loaded', 'missing', 'unexpected', 'resized', 'fraction'}``
        (``loaded``/``missing``/``unexpected``/``resized`` are key lists).

    Raises:
        SwinCheckpointMismatchError: (a ``RuntimeError``) On any of these
            or less than ``min_fraction`` loaded; it names the file, the
            architecture found in it and the model's.
        PretrainedCheckpointNotFoundError: See :func:`read_pretrained_tensors`.
        PretrainedDownloadError: See :func:`read_pretrained_tensors`.
    """
    source = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else _IN_MEMORY
    raw = read_pretrained_tensors(source) if source != _IN_MEMORY else checkpoint
    converted, fmt = convert_swin_state_dict(raw)
    model_state = model.state_dict()
    resized = resize_relative_position_tables(converted, model_state)

    expected = _backbone_weights(model)
    skipped_norms = sorted(k for k in expected if _OUT_NORM.match(k) and k not in converted)
    for key in skipped_norms:
        expected.pop(key)

    to_load, unexpected, foreign, mismatched = sort_checkpoint_tensors(converted, model_state, _is_leftover)
    loaded = [k for k in expected if k in to_load]
    missing = [k for k in expected if k not in to_load]
    total = sum(v.numel() for v in expected.values())
    fraction = sum(expected[k].numel() for k in loaded) / total if total else 0.0
    extra = foreign + unexpected
    print_log(
        f'Swin checkpoint {source} ({fmt}): loaded {len(loaded)}/{len(expected)} backbone '
        f'tensors ({fraction:.1%} of elements), resized {len(resized)} tables, '
        f'out-norms at init {len(skipped_norms)}; missing {len(missing)}'
        + (f' [{name_listing(missing)}]' if missing else '')
        + f'; unexpected {len(extra)}' + (f' [{name_listing(extra)}]' if extra else '')
        + (f'; other shapes {len(mismatched)}' if mismatched else ''),
        logger=logger if logger is not None else MMLogger.get_current_instance(),
        level=logging.WARNING if missing or foreign or mismatched else logging.INFO)  # leftovers: INFO
    found, wanted = swin_arch_of(converted), swin_arch_of(model_state)
    if foreign or mismatched:
        raise SwinCheckpointMismatchError(fit_error_message(source, fmt, foreign, mismatched, found, wanted))
    if fraction < min_fraction:
        raise SwinCheckpointMismatchError(coverage_error_message(
            source, fmt, fraction, min_fraction, len(loaded), missing, found, wanted))
    model.load_state_dict(to_load, strict=False)
    return dict(format=fmt, loaded=loaded, missing=missing, unexpected=unexpected,
                resized=resized, fraction=fraction)
