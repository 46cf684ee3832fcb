"""DiTASK for ``nn.MultiheadAttention`` (mmseg's VisionTransformer, mmcv bricks).

``nn.MultiheadAttention`` keeps its input projection as a fused
``in_proj_weight`` parameter and reads ``out_proj.weight`` directly inside
``F.multi_head_attention_forward``, so wrapping its linears does nothing. This
layer replaces the whole module: the fused q/k/v projection gets a DiTASK
transform with one SVD per q, k and v block (``num_splits=3``), the output
projection another, and the attention runs with the adapted weights. State-dict
keys stay those of ``nn.MultiheadAttention`` (plus θ), so pretrained
checkpoints of the plain model load unchanged.
"""
from typing import Any, Optional, Tuple

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..registry import MODELS
from .base import cast_weight_for
from .ditask import DiTASKLinear

# keys of the fused input projection's internal DiTASKLinear: the same tensors
# as in_proj_weight / in_proj_bias, so they are not saved twice
_ALIASES = (('in_proj.weight', 'in_proj_weight'), ('in_proj.bias', 'in_proj_bias'))


@MODELS.register_module()
class DiTASKMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` whose projections are DiTASK-adapted.

    Args:
        base_layer: The pretrained attention (``kdim == vdim == embed_dim``).
        **ditask_kwargs: Passed to both :class:`DiTASKLinear` projections
            (``tessellation_size``, ``tasks``, ``theta_init``...).
            ``main_path_dropout`` is not supported here.

    Attributes:
        in_proj (DiTASKLinear): The fused q/k/v projection, split in 3.
        out_proj (DiTASKLinear): The output projection.
    """

    wraps = nn.MultiheadAttention

    def __init__(self, base_layer: nn.MultiheadAttention, **ditask_kwargs: Any) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.MultiheadAttention):
            raise TypeError(f'DiTASKMultiheadAttention wraps nn.MultiheadAttention, got {type(base_layer).__name__}')
        if not base_layer._qkv_same_embed_dim:
            raise ValueError('separate q/k/v projection weights (kdim/vdim != embed_dim) are not supported')
        if ditask_kwargs.get('main_path_dropout'):
            raise ValueError('main_path_dropout is not supported for attention layers')
        for attr in ('embed_dim', 'num_heads', 'dropout', 'batch_first', 'head_dim', 'add_zero_attn'):
            setattr(self, attr, getattr(base_layer, attr))
        self.in_proj_weight = base_layer.in_proj_weight
        self.in_proj_bias = base_layer.in_proj_bias
        self.bias_k, self.bias_v = base_layer.bias_k, base_layer.bias_v
        fused = nn.Linear(self.embed_dim, 3 * self.embed_dim, bias=self.in_proj_bias is not None)
        fused.weight = self.in_proj_weight
        fused.bias = self.in_proj_bias
        self.in_proj = DiTASKLinear(fused, num_splits=3, **ditask_kwargs)
        self.out_proj = DiTASKLinear(base_layer.out_proj, **ditask_kwargs)
        for p in (self.bias_k, self.bias_v):
            if p is not None:
                p.requires_grad_(False)
        self._register_state_dict_hook(_drop_aliases)
        self._register_load_state_dict_pre_hook(_fill_aliases)

    def forward(self,
                query: Tensor,
                key: Tensor,
                value: Tensor,
                key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = True,
                attn_mask: Optional[Tensor] = None,
                average_attn_weights: bool = True,
                is_causal: bool = False,
                task: Optional[str] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """``nn.MultiheadAttention.forward`` with the adapted projections.

        ``task`` (or the layers' ``active_task``) selects a task transform.
        """
        if self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        w_in = cast_weight_for(query, self.in_proj.adapted_weight(self.in_proj.resolve_task(task)))
        w_out = cast_weight_for(query, self.out_proj.adapted_weight(self.out_proj.resolve_task(task)))
        out, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, w_in, self.in_proj_bias, self.bias_k, self.bias_v,
            self.add_zero_attn, self.dropout, w_out, self.out_proj.bias, training=self.training,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            average_attn_weights=average_attn_weights, is_causal=is_causal)
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


def _drop_aliases(module, state_dict, prefix, local_metadata):
    for alias, _ in _ALIASES:
        state_dict.pop(prefix + alias, None)
    return state_dict


def _fill_aliases(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    for alias, canonical in _ALIASES:
        if prefix + canonical in state_dict and prefix + alias not in state_dict:
            state_dict[prefix + alias] = state_dict[prefix + canonical]
