"""Run the last Swin block of a stage once per task, sharing what can be shared.

In DiTASK's multi-task Swin (as in the public DiTASK code) the last block of each
stage computes the windowed attention once, from the shared stream, and then
branches: every task projects the attention context with its own ``proj``,
adds it to the shared residual, and runs its own MLP (``fc1``/``fc2`` with
its task transform; ``norm2`` is shared). The shared path of that block is
computed only when the next stage needs it.

These functions drive mmseg's ``SwinBlock`` modules (their ``norm1``,
``attn.w_msa`` weights, ``norm2`` and ``ffn``); they do not copy them. The
projected outputs of all paths are stacked along the batch axis so that the
window merge, the reverse shift and the DropPath run once for all paths.
The attention follows the block's window rule (:mod:`.window_rule`: the
official one, no shift and a ``min(H, W)`` window when the map fits in a
window), exactly as the shared blocks do.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ...adapters import AdapterLayer
from .window_rule import attention_context, merge_windows


def call_linear(layer: nn.Module, x: Tensor, task: Optional[str]) -> Tensor:
    """Call ``layer`` with ``task`` if it is an adapter, plainly otherwise."""
    if isinstance(layer, AdapterLayer):
        return layer(x, task=task)
    return layer(x)


def call_linear_paths(layer: nn.Module, x: Tensor, paths: Sequence[Optional[str]]) -> List[Tensor]:
    """``call_linear(layer, x, path)`` for every path; an adapter computes them in ``forward_paths``.

    ``DiTASKLinear.forward_paths`` can give every path the same dropped input
    (the public code's task ``proj``; ``task_paths_share_dropout``).
    """
    if isinstance(layer, AdapterLayer):
        return layer.forward_paths(x, paths)
    return [layer(x) for _ in paths]


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
    projected = [shift_msa.w_msa.proj_drop(y) for y in call_linear_paths(shift_msa.w_msa.proj, context, path_names)]
    attended = merge_windows(shift_msa, torch.cat(projected, 0), geometry, len(path_names))
    streams = [part + x for part in attended.chunk(len(path_names), 0)]
    outputs = {}
    for name, stream in zip(path_names, streams):
        outputs[name] = ffn_forward(block.ffn, block.norm2(stream), stream, name)
    shared = outputs.pop(None) if need_shared else None
    return shared, outputs
