"""Run a Swin block for several streams (shared, task groups), sharing what can be shared.

In DiTASK's multi-task Swin (as in the public DiTASK code) the last block of each
stage computes the windowed attention once, from the shared stream, and then
branches: every task projects the attention context with its own ``proj``,
adds it to the shared residual, and runs its own MLP (``fc1``/``fc2`` with
its task transform; ``norm2`` is shared). The shared path of that block is
computed only when the next stage needs it. With task groups
(:mod:`.task_groups`) a block may also read several streams: the attention
then runs once per input stream, all of them in one batch.

These functions drive mmseg's ``SwinBlock`` modules (their ``norm1``,
``attn.w_msa`` weights, ``norm2`` and ``ffn``); they do not copy them. The
projected outputs of all paths are stacked along the batch axis so that the
window merge, the reverse shift and the DropPath run once for all paths.
The attention follows the block's window rule (:mod:`.window_rule`: the
official one, no shift and a ``min(H, W)`` window when the map fits in a
window), exactly as the shared blocks do.
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ...adapters import AdapterLayer
from .task_groups import SHARED_ONLY, Routes
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


def routed_block_forward(block: nn.Module, inputs: Mapping[Optional[str], Tensor], hw_shape: Tuple[int, int],
                         routes: Routes) -> Dict[Optional[str], Tensor]:
    """Run an mmseg ``SwinBlock`` for every ``(output, input)`` stream pair of ``routes``.

    The windowed attention (with the shared ``qkv``) is computed once per
    distinct input stream, all inputs in one batch; every output stream then
    projects its input's context with its own ``proj``, adds its input's
    residual and runs its own MLP. Layers without a transform for a stream
    use their shared one.

    Args:
        block: An mmseg ``SwinBlock`` whose adapter layers know the
            streams' keys (:mod:`.task_groups`).
        inputs: Input tokens by stream key (``None``: shared), each
            ``(B, H·W, C)``.
        hw_shape: ``(H, W)``.
        routes: ``(output key, input key)`` pairs.

    Returns:
        ``{output key: (B, H·W, C)}``.
    """
    if tuple(routes) == SHARED_ONLY:
        return {None: block(inputs[None], hw_shape)}
    sources = list(dict.fromkeys(src for _, src in routes))
    readers = {src: [out for out, s in routes if s == src] for src in sources}
    batch = inputs[sources[0]].shape[0]
    x = torch.cat([inputs[s] for s in sources], 0) if len(sources) > 1 else inputs[sources[0]]
    shift_msa = block.attn
    context, geometry = attention_context(shift_msa, block.norm1(x), hw_shape)
    outputs: List[Optional[str]] = []
    projected: List[Tensor] = []
    for src, ctx in zip(sources, context.chunk(len(sources), 0)):
        outs = readers[src]
        projected += [shift_msa.w_msa.proj_drop(y) for y in call_linear_paths(shift_msa.w_msa.proj, ctx, outs)]
        outputs += outs
    attended = merge_windows(shift_msa, torch.cat(projected, 0), dict(geometry, B=batch), len(outputs))
    source_of = dict(routes)
    result = {}
    for out, part in zip(outputs, attended.chunk(len(outputs), 0)):
        stream = part + inputs[source_of[out]]
        result[out] = ffn_forward(block.ffn, block.norm2(stream), stream, out)
    return result


def branched_block_forward(block: nn.Module, x: Tensor, hw_shape: Tuple[int, int],
                           tasks: Sequence[str], need_shared: bool) -> Tuple[Optional[Tensor], Dict[str, Tensor]]:
    """DiTASK's branched last block: the shared stream (if ``need_shared``) and one stream per task, all from ``x``.

    Returns:
        ``(shared output or None, {task: output})``, each ``(B, H·W, C)``.
    """
    routes = ((None, None),) * bool(need_shared) + tuple((t, None) for t in tasks)
    outputs = routed_block_forward(block, {None: x}, hw_shape, routes)
    return outputs.pop(None, None), outputs
