"""Swin's window attention with the official rule for maps that fit in one window.

The official Swin (and with it the public DiTASK code) decides in
``SwinTransformerBlock.__init__``: when ``min(H, W) <= window_size`` the block
stops shifting (``shift_size = 0``) and uses a window of ``min(H, W)``. mmseg's
``ShiftWindowMSA`` always shifts and pads the map up to its window, so at 224
px (stage 4 is 7x7) its stage-4 features are not the official model's, whose
checkpoints were trained with the rule.

:func:`apply_official_window_rule` turns every ``ShiftWindowMSA`` of a model
into an :class:`OfficialRuleShiftWindowMSA` in place (no new parameters or
buffers, the same state-dict keys). It decides the window and shift at every
forward from the actual ``(H, W)`` of the stage, so one model serves any input
size; where the rule changes nothing (``min(H, W) > window``) it runs mmseg's
own forward. The branched blocks (:mod:`.task_branch`) use
:func:`attention_context` and :func:`merge_windows`, which follow the same rule.

Windows smaller than the configured one (e.g. 4x4 at stage 4 of a 128 px input)
need a ``(2w-1)²`` bias table. The official model gets it by bicubically
resizing the checkpoint's ``(2W-1)²`` table when it loads the checkpoint (our
:func:`.swin_checkpoint.resize_relative_position_tables` does the same for a
model built with another window). :func:`relative_position_bias` applies that
very resize on the fly to the model's unchanged ``(2W-1)²`` table, so the model
computes what an official model built at that input size computes after
loading the same checkpoint. The resize is linear: it is applied as a fixed
matrix (the resize of the identity), which is cheap, lets gradients reach the
full table and, unlike ``F.interpolate``'s bicubic backward on CUDA, is
deterministic (the quick config sets ``deterministic=True``). The alternative,
the central ``(2w-1)²`` sub-table (each pair keeps the bias of its offset), is
what a model trained at the small size with mmseg's padding would want, but no
official or public model computes it.

Non-square maps follow the official rule on ``min(H, W)`` for both sides; the
longer side is padded up to a multiple of the window as mmseg does.
"""
from functools import lru_cache
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.backbones.swin import ShiftWindowMSA, WindowMSA
from torch import Tensor

from .swin_checkpoint import resize_relative_position_tables


def official_window_and_shift(hw_shape: Tuple[int, int], window_size: int, shift_size: int) -> Tuple[int, int]:
    """The official Swin rule: ``(min(H, W), 0)`` if the map fits in a window.

    Args:
        hw_shape: ``(H, W)`` of the stage's map.
        window_size: The configured window.
        shift_size: The configured shift (0 or ``window_size // 2``).

    Returns:
        ``(window, shift)`` the block uses for this map.
    """
    smallest = min(hw_shape)
    if smallest <= window_size:
        return smallest, 0
    return window_size, shift_size


def window_and_shift(shift_msa: nn.Module, hw_shape: Tuple[int, int]) -> Tuple[int, int]:
    """``(window, shift)`` an mmseg ``ShiftWindowMSA`` uses for a map of ``hw_shape``.

    The official rule for an :class:`OfficialRuleShiftWindowMSA`, the
    configured values (mmseg's behaviour) for a plain ``ShiftWindowMSA``.
    """
    if isinstance(shift_msa, OfficialRuleShiftWindowMSA):
        return official_window_and_shift(hw_shape, shift_msa.window_size, shift_msa.shift_size)
    return shift_msa.window_size, shift_msa.shift_size


@lru_cache(maxsize=None)
def bicubic_table_map(window_from: int, window_to: int) -> Tensor:
    """The linear map of the pretrained loader's bicubic table resize.

    Args:
        window_from: Window of the source table, ``(2·window_from-1)²`` rows.
        window_to: Window of the resized table.

    Returns:
        ``M``, ``((2·window_to-1)², (2·window_from-1)²)``: for any table ``T``
        with one column per head, ``M @ T`` is
        :func:`.swin_checkpoint.resize_relative_position_tables` of ``T``.
    """
    rows_from, rows_to = (2 * window_from - 1) ** 2, (2 * window_to - 1) ** 2
    # every column of the identity is one "head" whose table is a unit impulse
    name = 'relative_position_bias_table'  # the resize only touches keys named so
    with torch.inference_mode(False), torch.no_grad():  # cached: must be usable when training later
        tables = {name: torch.eye(rows_from)}
        resized = resize_relative_position_tables(tables, {name: torch.empty(rows_to, rows_from)})
    if window_from != window_to and resized != [name]:
        raise RuntimeError(f'cannot resize a window-{window_from} bias table to window {window_to}')
    return tables[name]


@lru_cache(maxsize=None)
def relative_position_index(window: int) -> Tensor:
    """mmseg's (and the official) ``relative_position_index`` of a square window."""
    with torch.inference_mode(False):  # cached: must be usable when training later
        coords = WindowMSA.double_step_seq(2 * window - 1, window, 1, window)
        return (coords + coords.T).flip(1).contiguous()


def relative_position_bias(msa: WindowMSA, window: int) -> Tensor:
    """Relative-position bias of ``msa`` for a square ``window``, ``(heads, N, N)``, ``N = window²``.

    The configured window reads the table as mmseg does; a smaller one reads
    the table bicubically resized to it, as the official loader would
    resize it for a model built with that window (see the module docstring).
    """
    table = msa.relative_position_bias_table
    index = msa.relative_position_index
    if window != msa.window_size[0]:
        table = bicubic_table_map(msa.window_size[0], window).to(table) @ table
        index = relative_position_index(window).to(table.device)
    tokens = window * window
    return table[index.view(-1)].view(tokens, tokens, -1).permute(2, 0, 1)


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


def partition_windows(grid: Tensor, window: int) -> Tensor:
    """``(B, H, W, C)`` → ``(B·num_windows, window², C)``, windows row-major."""
    B, H, W, C = grid.shape
    grid = grid.view(B, H // window, window, W // window, window, C)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, C)


def reverse_windows(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`partition_windows`: ``(B·num_windows, window², C)`` → ``(B, H, W, C)``."""
    C = windows.shape[-1]
    grid = windows.view(-1, height // window, width // window, window, window, C)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, C)


def attention_context(shift_msa: nn.Module, x: Tensor, hw_shape: Tuple[int, int]) -> Tuple[Tensor, Dict]:
    """Windowed self-attention up to, not including, the output projection.

    The window and shift are :func:`window_and_shift`'s for this map; the
    qkv linear is called with its shared adaptation.

    Args:
        shift_msa: An mmseg ``ShiftWindowMSA`` (or :class:`OfficialRuleShiftWindowMSA`).
        x: Normalised tokens, ``(B, H·W, C)``.
        hw_shape: ``(H, W)``.

    Returns:
        The attention context in window layout, ``(B·num_windows, N, C)``,
        and the geometry :func:`merge_windows` needs.
    """
    msa = shift_msa.w_msa
    B, _, C = x.shape
    H, W = hw_shape
    window, shift = window_and_shift(shift_msa, hw_shape)
    grid = x.view(B, H, W, C)
    pad_r, pad_b = (window - W % window) % window, (window - H % window) % window
    grid = F.pad(grid, (0, 0, 0, pad_r, 0, pad_b))
    H_pad, W_pad = grid.shape[1], grid.shape[2]
    mask = None
    if shift > 0:
        grid = torch.roll(grid, shifts=(-shift, -shift), dims=(1, 2))
        mask = shifted_window_mask(H_pad, W_pad, window, shift, x.device)
    windows = partition_windows(grid, window)

    Bw, N, _ = windows.shape
    heads = msa.num_heads
    qkv = msa.qkv(windows).reshape(Bw, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * msa.scale, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1) + relative_position_bias(msa, window).unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = (attn.view(Bw // nw, nw, heads, N, N) + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, N, N)
    attn = msa.attn_drop(msa.softmax(attn))
    context = (attn @ v).transpose(1, 2).reshape(Bw, N, C)
    return context, dict(B=B, H=H, W=W, H_pad=H_pad, W_pad=W_pad, C=C, window=window, shift=shift)


def merge_windows(shift_msa: nn.Module, windows: Tensor, geometry: Dict, paths: int) -> Tensor:
    """Undo :func:`attention_context`'s windowing for ``paths`` stacked outputs.

    Args:
        shift_msa: The same ``ShiftWindowMSA`` (its DropPath is applied).
        windows: ``(paths·B·num_windows, N, C)``, path-major.
        geometry: What :func:`attention_context` returned.
        paths: How many outputs are stacked.

    Returns:
        ``(paths·B, H·W, C)`` after the reverse shift, the crop and DropPath.
    """
    g = geometry
    grid = reverse_windows(windows, g['window'], g['H_pad'], g['W_pad'])
    if g['shift'] > 0:
        grid = torch.roll(grid, shifts=(g['shift'], g['shift']), dims=(1, 2))
    grid = grid[:, :g['H'], :g['W'], :].contiguous()
    return shift_msa.drop(grid.view(paths * g['B'], g['H'] * g['W'], g['C']))


class OfficialRuleShiftWindowMSA(ShiftWindowMSA):
    """mmseg's ``ShiftWindowMSA`` with the official rule for maps that fit in a window.

    Same parameters, buffers and configured ``window_size``/``shift_size``;
    only the forward of a map with ``min(H, W) <= window_size`` differs: no
    shift, a ``min(H, W)`` window (see the module docstring).
    """

    def forward(self, query: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        """Attention of ``query`` ``(B, H·W, C)``; returns ``(B, H·W, C)``."""
        if window_and_shift(self, hw_shape) == (self.window_size, self.shift_size):
            return super().forward(query, hw_shape)
        context, geometry = attention_context(self, query, hw_shape)
        projected = self.w_msa.proj_drop(self.w_msa.proj(context))
        return merge_windows(self, projected, geometry, paths=1)


def apply_official_window_rule(model: nn.Module) -> int:
    """Give every mmseg ``ShiftWindowMSA`` of ``model`` the official small-map rule, in place.

    Returns:
        How many modules now follow the rule.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, ShiftWindowMSA):
            if type(module) is ShiftWindowMSA:
                module.__class__ = OfficialRuleShiftWindowMSA
            count += isinstance(module, OfficialRuleShiftWindowMSA)
    return count
