"""Run the last Swin block of a stage once per task, sharing what can be shared.

In DiTASK's multi-task Swin (shared/docs/method.md §1.3) the last block of each
stage computes the windowed attention once, from the shared stream, and then
branches: every task projects the attention context with its own ``proj``,
adds it to the shared residual, and runs its own MLP (``fc1``/``fc2`` with
its task transform; ``norm2`` is shared). The shared path of that block is
computed only when the next stage needs it.

These functions drive mmseg's ``SwinBlock`` modules (their ``norm1``,
``attn.w_msa`` weights, ``norm2`` and ``ffn``); they do not copy them. The
projected outputs of all paths are stacked along the batch axis so that the
window merge, the reverse shift and the DropPath run once for all paths.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...adapters import AdapterLayer


def call_linear(layer: nn.Module, x: Tensor, task: Optional[str]) -> Tensor:
    """Call ``layer`` with ``task`` if it is an adapter, plainly otherwise."""
    if isinstance(layer, AdapterLayer):
        return layer(x, task=task)
    return layer(x)


def shifted_window_mask(height: int, width: int, window: int, shift: int,
                        device: torch.device) -> Tensor:
    """Additive attention mask of shifted windows, ``(num_windows, N, N)``.

    Tokens that come from different image regions after the cyclic shift get
    −100 (as in Swin), others 0. ``N = window²``.
    """
    region = torch.zeros(height, width, device=device)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in bounds:
        for cols in bounds:
            region[rows, cols] = label
            label += 1
    region = region.view(height // window, window, width // window, window)
    region = region.permute(0, 2, 1, 3).reshape(-1, window * window)
    diff = region.unsqueeze(1) - region.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def attention_context(shift_msa: nn.Module, x: Tensor, hw_shape: Tuple[int, int]) -> Tuple[Tensor, Dict]:
    """Windowed self-attention up to, not including, the output projection.

    Args:
        shift_msa: An mmseg ``ShiftWindowMSA``.
        x: Normalised tokens, ``(B, H·W, C)``.
        hw_shape: ``(H, W)``.

    Returns:
        The attention context in window layout, ``(B·num_windows, N, C)``,
        and the geometry :func:`merge_windows` needs.
    """
    msa = shift_msa.w_msa
    B, L, C = x.shape
    H, W = hw_shape
    window, shift = shift_msa.window_size, shift_msa.shift_size
    grid = x.view(B, H, W, C)
    pad_r, pad_b = (window - W % window) % window, (window - H % window) % window
    grid = F.pad(grid, (0, 0, 0, pad_r, 0, pad_b))
    H_pad, W_pad = grid.shape[1], grid.shape[2]
    mask = None
    if shift > 0:
        grid = torch.roll(grid, shifts=(-shift, -shift), dims=(1, 2))
        mask = shifted_window_mask(H_pad, W_pad, window, shift, x.device)
    windows = shift_msa.window_partition(grid).view(-1, window * window, C)

    Bw, N, _ = windows.shape
    heads = msa.num_heads
    qkv = call_linear(msa.qkv, windows, None).reshape(Bw, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * msa.scale, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1)
    bias = msa.relative_position_bias_table[msa.relative_position_index.view(-1)]
    attn = attn + bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = (attn.view(Bw // nw, nw, heads, N, N) + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, N, N)
    attn = msa.attn_drop(msa.softmax(attn))
    context = (attn @ v).transpose(1, 2).reshape(Bw, N, C)
    return context, dict(B=B, H=H, W=W, H_pad=H_pad, W_pad=W_pad, C=C)


def merge_windows(shift_msa: nn.Module, windows: Tensor, geometry: Dict, paths: int) -> Tensor:
    """Undo :func:`attention_context`'s windowing for ``paths`` stacked outputs.

    Args:
        shift_msa: The same ``ShiftWindowMSA``.
        windows: ``(paths·B·num_windows, N, C)``, path-major.
        geometry: What :func:`attention_context` returned.
        paths: How many outputs are stacked.

    Returns:
        ``(paths·B, H·W, C)`` after the reverse shift, the crop and DropPath.
    """
    g, window, shift = geometry, shift_msa.window_size, shift_msa.shift_size
    windows = windows.view(-1, window, window, g['C'])
    grid = shift_msa.window_reverse(windows, g['H_pad'], g['W_pad'])
    if shift > 0:
        grid = torch.roll(grid, shifts=(shift, shift), dims=(1, 2))
    grid = grid[:, :g['H'], :g['W'], :].contiguous()
    return shift_msa.drop(grid.view(paths * g['B'], g['H'] * g['W'], g['C']))


def ffn_forward(ffn: nn.Module, x: Tensor, identity: Tensor, task: Optional[str]) -> Tensor:
    """mmcv ``FFN`` forward with task-aware linears: ``identity + DropPath(mlp(x))``."""
    (fc1, act, drop1), fc2, drop2 = ffn.layers[0], ffn.layers[1], ffn.layers[2]
    y = drop2(call_linear(fc2, drop1(act(call_linear(fc1, x, task))), task))
    return identity + ffn.dropout_layer(ffn.gamma2(y))


def branched_block_forward(block: nn.Module, x: Tensor, hw_shape: Tuple[int, int],
                           tasks: Sequence[str], need_shared: bool) -> Tuple[Optional[Tensor], Dict[str, Tensor]]:
    """Run an mmseg ``SwinBlock`` once for the shared stream and once per task.

    Args:
        block: The last block of a stage, with adapter layers whose tasks are
            ``tasks`` (layers without a task transform use their shared one).
        x: Shared-stream input, ``(B, H·W, C)``.
        hw_shape: ``(H, W)``.
        tasks: Task names, in output order.
        need_shared: Whether the shared output is consumed (by the next
            stage). If not, its projection and MLP are not computed.

    Returns:
        ``(shared output or None, {task: output})``, each ``(B, H·W, C)``.
    """
    shift_msa = block.attn
    context, geometry = attention_context(shift_msa, block.norm1(x), hw_shape)
    path_names: List[Optional[str]] = ([None] if need_shared else []) + list(tasks)
    projected = [shift_msa.w_msa.proj_drop(call_linear(shift_msa.w_msa.proj, context, t)) for t in path_names]
    attended = merge_windows(shift_msa, torch.cat(projected, 0), geometry, len(path_names))
    streams = [part + x for part in attended.chunk(len(path_names), 0)]
    outputs = {}
    for name, stream in zip(path_names, streams):
        outputs[name] = ffn_forward(block.ffn, block.norm2(stream), stream, name)
    shared = outputs.pop(None) if need_shared else None
    return shared, outputs
