"""Write an mmseg-named Swin backbone as an official Swin Transformer checkpoint.

The inverse of :func:`.swin_checkpoint.convert_swin_state_dict` for the
``official`` layout (Microsoft's ``swin_*_22k.pth``): the result is
``{'model': sd}`` with the official names (``patch_embed.proj``,
``layers.i.blocks.j.attn.qkv``, ``mlp.fc1/fc2``, ``layers.i.downsample`` at the
end of stage ``i``, one final ``norm``), the PatchMerging reduction columns and
merging-norm channels back in the official ``[x(0,0), x(1,0), x(0,1), x(1,1)]``
order, and the ``relative_position_index`` / ``attn_mask`` buffers the
official model keeps in its state dict. Such a file loads into any of our Swin
backbones through ``init_cfg=dict(type='Pretrained', checkpoint=FILE)`` exactly
as a user's downloaded weights do, and into the official code.

What is not written: the adapters (a backbone holding ``theta_``/``lora_``
tensors is refused: its stored weights are not what it computes), the output
norms ``norm0..norm{last-1}`` (official files have none) and a classifier
``head`` (the backbone never had one). A backbone without ``norm{last}`` (the
default ``out_type='post_merge'`` builds no output norms) gets an identity final
``norm`` (weight 1, bias 0), which is what a freshly built official model
holds, so that the file has the official key set; our loader skips it for such
a backbone.

The ``attn_mask`` buffers depend on the pretraining resolution (``img_size``,
224 for the public files): the official block at map size ``R`` uses a window of
``min(window, R)`` and shifts only when ``R > window``. Bias tables are written
at the model's window (the official loader resizes them bicubically where a
block uses a smaller one).
"""
import re
from collections.abc import Mapping
from typing import Dict, Union

import torch
from mmengine.logging import print_log
from torch import nn

from .swin_checkpoint import (ADAPTER_MARKERS, BLOCK_RENAMES, DERIVED_BUFFERS, PATCH_EMBED_RENAME, _backbone_view,
                              rename_at_boundary, unfold_merge_index)
from .window_rule import relative_position_index, shifted_window_mask

#: mmseg → official names inside a block (the loader's table, inverted).
OFFICIAL_BLOCK_RENAMES = tuple((mmseg, official) for official, mmseg in BLOCK_RENAMES)
_STAGE_KEY = re.compile(r'^stages\.(\d+)\.(.*)$')
_BLOCK_KEY = re.compile(r'^stages\.(\d+)\.blocks\.(\d+)\.')
_OUT_NORM_KEY = re.compile(r'^norm(\d+)\.(weight|bias)$')
_MERGE_PERMUTED = re.compile(r'\.downsample\.(reduction\.weight|norm\.(weight|bias))$')
_TABLE_SUFFIX = '.attn.w_msa.relative_position_bias_table'


class SwinExportError(ValueError):
    """The state dict cannot be written as an official Swin checkpoint."""


def official_merge_index(channels: int) -> torch.Tensor:
    """Gather index from nn.Unfold PatchMerging columns back to the official ones.

    Args:
        channels: Channels ``C`` of the merged map (``4 * C`` merging inputs).

    Returns:
        ``idx`` of length ``4 * C`` with ``official_col = unfold_col[idx]``:
        the inverse permutation of :func:`.swin_checkpoint.unfold_merge_index`.
    """
    return torch.argsort(unfold_merge_index(channels))


def _plain_backbone_tensors(model_or_state_dict: Union[nn.Module, Mapping]) -> Dict[str, torch.Tensor]:
    """The mmseg-named backbone tensors of a module, segmentor or (checkpoint) state dict."""
    if isinstance(model_or_state_dict, nn.Module):
        backbone = getattr(model_or_state_dict, 'backbone', model_or_state_dict)
        state = backbone.state_dict()
    elif isinstance(model_or_state_dict, Mapping):
        state, _ = _backbone_view(model_or_state_dict)
    else:
        raise SwinExportError(f'expected an nn.Module or a state dict, got {type(model_or_state_dict).__name__}')
    if not any(k.startswith('stages.') for k in state) or 'patch_embed.projection.weight' not in state:
        raise SwinExportError('not an mmseg-named Swin backbone: expected stages.N.blocks.M... and '
                              f'patch_embed.projection.weight; first keys: {list(state)[:6]}')
    adapters = [k for k in state if any(marker in k for marker in ADAPTER_MARKERS)]
    if adapters:
        raise SwinExportError(
            f'the backbone holds {len(adapters)} adapter tensors (e.g. {adapters[0]}): its stored linear weights '
            'are not the weights it computes with. Export a plain backbone (adapter=None, e.g. a full fine-tuning '
            'run) or fold the adapters first with tools/model_converters/merge_adapters.py')
    return {k: v.detach().cpu() for k, v in state.items()}


def _stage_layout(state: Mapping[str, torch.Tensor]) -> Dict[int, Dict[str, int]]:
    """``{stage: {'depth', 'window'}}`` read from the block indices and the bias-table lengths."""
    layout: Dict[int, Dict[str, int]] = {}
    for key, value in state.items():
        m = _BLOCK_KEY.match(key)
        if not m:
            continue
        stage, block = int(m.group(1)), int(m.group(2))
        info = layout.setdefault(stage, dict(depth=0, window=0))
        info['depth'] = max(info['depth'], block + 1)
        if key.endswith(_TABLE_SUFFIX):
            side = round(value.shape[0] ** 0.5)
            if side * side != value.shape[0] or side % 2 == 0:
                raise SwinExportError(f'{key}: a bias table of {value.shape[0]} rows is not (2W-1)² for a window W')
            info['window'] = (side + 1) // 2
    missing = sorted(s for s, info in layout.items() if not info['window'])
    if missing or sorted(layout) != list(range(len(layout))):
        raise SwinExportError(f'stages {missing or sorted(layout)}: expected stages 0..N-1, each with '
                              'relative_position_bias_table tensors')
    return layout


def _official_key(key: str, last: int) -> Union[str, None]:
    """The official name of an mmseg backbone key, or ``None`` for a tensor the official file lacks."""
    if key.endswith(DERIVED_BUFFERS):
        return None
    norm = _OUT_NORM_KEY.match(key)
    if norm:
        return f'norm.{norm.group(2)}' if int(norm.group(1)) == last else None
    if key.startswith(PATCH_EMBED_RENAME[1]):
        return PATCH_EMBED_RENAME[0] + key[len(PATCH_EMBED_RENAME[1]):]
    stage = _STAGE_KEY.match(key)
    if stage:
        return f'layers.{stage.group(1)}.{rename_at_boundary(stage.group(2), OFFICIAL_BLOCK_RENAMES)}'
    return key


def export_official_swin(model_or_state_dict: Union[nn.Module, Mapping], img_size: int = 224,
                         patch_size: int = 4) -> Dict[str, Dict[str, torch.Tensor]]:
    """Convert a plain mmseg-named Swin backbone to the official checkpoint layout.

    Args:
        model_or_state_dict: A backbone (``MultiTaskSwinTransformer`` with
            ``adapter=None``, mmseg's ``SwinTransformer``), a segmentor with a
            ``backbone``, or a state dict / checkpoint of one (``module.`` is
            stripped and a ``backbone.`` sub-dict selected).
        img_size: Pretraining image side the ``attn_mask`` buffers are built
            for (224 for the public files; a config's ``pretrain_img_size``).
        patch_size: Patch side of the patch embedding.

    Returns:
        ``{'model': {official name: tensor}}``, tensors on the CPU.

    Raises:
        SwinExportError: (a ``ValueError``) If the input is not a plain Swin
            backbone (adapter tensors, missing stages or bias tables).
    """
    state = _plain_backbone_tensors(model_or_state_dict)
    layout = _stage_layout(state)
    last = max(layout)
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _official_key(key, last)
        if name is None:
            continue
        if _MERGE_PERMUTED.search(key):
            value = value.index_select(value.dim() - 1, official_merge_index(value.shape[-1] // 4))
        out[name] = value.clone()
    if 'norm.weight' not in out:
        dims = state['patch_embed.projection.weight'].shape[0] * 2 ** last
        out['norm.weight'], out['norm.bias'] = torch.ones(dims), torch.zeros(dims)
        print_log(f'exported Swin: the backbone has no norm{last}; wrote an identity final norm ({dims} channels)',
                  logger='current')
    resolution = img_size // patch_size
    for stage in sorted(layout):
        depth, window = layout[stage]['depth'], layout[stage]['window']
        effective = min(window, resolution)
        for block in range(depth):
            prefix = f'layers.{stage}.blocks.{block}.'
            out[prefix + 'attn.relative_position_index'] = relative_position_index(window).clone()
            if block % 2 == 1 and resolution > window:
                out[prefix + 'attn_mask'] = shifted_window_mask(resolution, resolution, effective, window // 2,
                                                                torch.device('cpu'))
        resolution //= 2
    return {'model': out}
