"""Multi-task Swin Transformer with adapted linears (DiTASK, MTLoRA, LoRA, full FT).

The architecture of the public DiTASK code, built on mmseg's
``SwinTransformer`` (its patch embedding, blocks, PatchMerging and weights,
with the same state-dict keys):

* every adapted linear (qkv split in q/k/v, proj, fc1, fc2 by default) gets a
  shared adaptation;
* the last block of each stage also gets one adaptation per task on
  ``proj``/``fc1``/``fc2``; it computes attention once and runs once per task
  on the shared input (:mod:`.task_branch`);
* PatchMerging applies to every task stream; the next stage consumes the
  shared stream; the shared path of the last block of the last stage, whose
  output nothing reads, is neither built nor run;
* more generally, ``task_groups`` gives each stage a partition of the tasks:
  a group's branch has one set of task-specific parameters and runs once for
  all its tasks, over the stage's last ``branch_depth`` blocks, either beside
  the shared trunk (``branch_mode='side'``, DiTASK) or as a tree whose group
  streams continue into the next stage (``'tree'``; :mod:`.task_groups`);
* every block, shared and branched, follows the official Swin rule for maps
  that fit in one window (no shift, a ``min(H, W)`` window; :mod:`.window_rule`),
  decided at each forward from the stage's actual size.

``forward(x)`` returns ``{task: [4 maps]}``: by default (``out_type=
'post_merge'``, the public code's layout) PatchMerging outputs at 1/8, 1/16
and 1/32 plus the last stage at 1/32, with 2C, 4C, 8C, 8C channels and no
output norms; ``out_type='pre_merge'`` gives mmseg's usual 1/4…1/32 maps
(C…8C) through its ``norm0..3``.
"""
import inspect
import re
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model.weight_init import trunc_normal_
from mmseg.models.backbones import SwinTransformer
from torch import Tensor

from ...adapters import (adapter_layers, capture_spectra, inject_adapters, refresh_svd_caches,
                         set_trainable, use_spectra)
from ...registry import MODELS
from .task_branch import routed_block_forward
from .task_groups import (SHARED_ONLY, StagePlan, groups_from_task_stages, layer_paths,
                          normalise_groups, plan_streams)
from .window_rule import apply_official_window_rule

ARCH_SETTINGS = {
    'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'small': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'base': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    'large': dict(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}
#: Where each adaptable linear sits inside an mmseg ``SwinBlock``.
LAYER_PATHS = {'qkv': 'attn.w_msa.qkv', 'proj': 'attn.w_msa.proj', 'fc1': 'ffn.layers.0.0', 'fc2': 'ffn.layers.1'}
#: Adapter arguments that may be given per stage, as a list of 4.
PER_STAGE_KEYS = ('tessellation_size', 'task_tessellation_size', 'rank', 'task_rank')
#: Name patterns (``re.search``) of the non-adapter parameters each policy trains.
TRAINABLE_POLICIES = {
    # what the public DiTASK/MTLoRA code trains besides θ (docs/method.md §7)
    'public': [r'^patch_embed\.', r'(^|\.)norm\d*\.', r'\.relative_position_bias_table$',
               r'\.downsample\.reduction\.'],
    'adapters': [],
    'adapters_norms': [r'(^|\.)norm\d*\.'],
    'all': [r'.*'],
}
POLICY_ALIASES = {'theta': 'adapters', 'theta_norms': 'adapters_norms'}
#: :class:`DiTASKSwinTransformer`'s adapter when a config gives none or only part of one. The
#: tessellations are :class:`~ditask_mm.adapters.DiTASKLinear`'s own defaults (the code's one copy
#: of the paper's 64 and 4); the configs set them in ``configs/_base_/models/ditask_swin-t.py``.
DITASK_DEFAULT_ADAPTER: Mapping[str, Any] = MappingProxyType(dict(type='DiTASKLinear'))
#: :class:`MTLoRASwinTransformer`'s adapter when a config gives none or only part of one (the
#: MTLoRA baseline's shared rank 64, per-task rank 4, scales 4, dropout 0.05).
MTLORA_DEFAULT_ADAPTER: Mapping[str, Any] = MappingProxyType(
    dict(type='MTLoRALinear', rank=64, task_rank=4, shared_scale=4.0, task_scale=4.0, dropout=0.05))


@MODELS.register_module()
class MultiTaskSwinTransformer(SwinTransformer):
    """mmseg Swin with shared and per-task adapted linears and task streams.

    Args:
        tasks: Task names; outputs come in this order.
        arch: ``'tiny'``, ``'small'``, ``'base'``, ``'large'`` or a dict with
            ``embed_dims``, ``depths`` and ``num_heads``.
        adapter: Adapter layer config, e.g. ``dict(type='DiTASKLinear',
            tessellation_size=64, task_tessellation_size=4)`` (the paper's
            values, as in the base config), or ``None`` for plain linears
            (full fine-tuning; :class:`DiTASKSwinTransformer` instead fills
            in :data:`DITASK_DEFAULT_ADAPTER`). ``tessellation_size``,
            ``task_tessellation_size``, ``rank`` and ``task_rank`` may be lists
            with one value per stage.
        adapted_layers: Which linears of a block are adapted, from
            ``qkv``, ``proj``, ``fc1``, ``fc2``.
        adapted_blocks: Per stage, the indices of the blocks to adapt
            (negative indices count from the end), or ``None`` for all.
        task_layers: Which linears of a branched block get a per-group
            adaptation (``qkv`` is not allowed: its adaptation is shared).
        task_stages: Stages whose last block branches per task (default: all);
            shorthand for ``task_groups`` with one task per group there and
            all tasks together elsewhere. Give one or the other.
        task_groups: One partition of ``tasks`` per stage, e.g.
            ``[[tasks], [tasks], [['semseg', 'human_parts'], ['sal', 'normals']],
            [[t] for t in tasks]]``. A group of all tasks is the shared stream
            (no branch); a smaller group gets one branch with its own
            task-specific parameters (key: its tasks joined by ``+``), shared by
            its tasks, whose heads read that branch.
        branch_depth: How many of a stage's last blocks branch (int, or one
            per stage).
        branch_mode: ``'side'`` (DiTASK: branches feed the heads, the shared
            trunk feeds the next stage) or ``'tree'`` (group streams continue
            into the next stage, which may split them further; each stage's
            partition must refine the one before).
        out_type: ``'post_merge'`` (public layout) or ``'pre_merge'``.
        trainable: Policy for the backbone's parameters: ``'public'`` (the
            adapters plus patch_embed, all norms, relative-position bias
            tables and PatchMerging reductions), ``'adapters'`` (alias
            ``'theta'``), ``'adapters_norms'`` (alias ``'theta_norms'``),
            ``'all'``, ``'frozen'``, or a list of parameter-name patterns
            trained besides the adapters.
        min_pretrained_fraction: Loading a pretrained checkpoint that covers
            less than this fraction of the backbone weights raises.
        with_cp_branches: Checkpoint the branched last blocks (recompute
            their forward in the backward): their per-task activations are
            most of what DiTASK holds above a shared model, so this trades
            the branches' forward FLOPs once more for that memory.
            mmseg's ``with_cp`` (all blocks) also covers the branched ones.
        official_window_rule: Follow the official Swin (and public DiTASK)
            rule: a block whose map has ``min(H, W) <= window_size`` does
            not shift and uses a ``min(H, W)`` window, with its bias table
            bicubically resized as the official loader would. The
            official checkpoints were trained so. ``False`` keeps mmseg's
            always-shifted, padded windows.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` loads an
            official, mmseg, mmpretrain or timm Swin checkpoint.
        **swin_kwargs: Passed to mmseg's ``SwinTransformer`` (``window_size``,
            ``drop_path_rate``, ``pretrain_img_size``, ...).
    """

    def __init__(self,
                 tasks: Sequence[str],
                 arch: Union[str, Dict] = 'tiny',
                 adapter: Optional[Dict] = None,
                 adapted_layers: Sequence[str] = ('qkv', 'proj', 'fc1', 'fc2'),
                 adapted_blocks: Optional[Sequence[Sequence[int]]] = None,
                 task_layers: Sequence[str] = ('proj', 'fc1', 'fc2'),
                 task_stages: Optional[Sequence[int]] = None,
                 task_groups: Optional[Sequence[Sequence[Sequence[str]]]] = None,
                 branch_depth: Union[int, Sequence[int]] = 1,
                 branch_mode: str = 'side',
                 out_type: str = 'post_merge',
                 trainable: Union[str, Sequence[str]] = 'public',
                 min_pretrained_fraction: float = 0.95,
                 init_cfg: Optional[Dict] = None,
                 drop_path_rate: float = 0.2,
                 with_cp_branches: bool = False,
                 official_window_rule: bool = True,
                 **swin_kwargs) -> None:
        arch_cfg = dict(ARCH_SETTINGS[arch]) if isinstance(arch, str) else dict(arch)
        if isinstance(arch, str) and arch not in ARCH_SETTINGS:
            raise KeyError(f'unknown Swin arch {arch!r}; choose from {sorted(ARCH_SETTINGS)} or pass a dict')
        if out_type not in ('post_merge', 'pre_merge'):
            raise ValueError(f"out_type must be 'post_merge' or 'pre_merge', got {out_type!r}")
        tasks = tuple(tasks)
        if not tasks or len(set(tasks)) != len(tasks) or not all(isinstance(t, str) for t in tasks):
            raise ValueError(f'tasks must be distinct task names, got {list(tasks)}')
        for name, layers in (('adapted_layers', adapted_layers), ('task_layers', task_layers)):
            unknown = sorted(set(layers) - set(LAYER_PATHS))
            if unknown:
                raise ValueError(f'{name} has unknown layers {unknown}; valid: {sorted(LAYER_PATHS)}')
        if 'qkv' in task_layers:
            raise ValueError('qkv cannot be task-specific: attention is computed once from the shared '
                             'stream (the public code builds such transforms and discards them)')
        if not set(task_layers) <= set(adapted_layers):
            raise ValueError(f'task_layers {list(task_layers)} must be among adapted_layers {list(adapted_layers)}')
        num_stages = len(arch_cfg['depths'])
        task_groups = self._resolve_groups(tasks, num_stages, task_stages, task_groups,
                                           bool(task_layers) and adapter is not None)
        plan = plan_streams(tasks, arch_cfg['depths'], task_groups, branch_depth, branch_mode)  # fails before building
        super().__init__(out_indices=tuple(range(num_stages)) if out_type == 'pre_merge' else (),
                         drop_path_rate=drop_path_rate, init_cfg=init_cfg, **arch_cfg, **swin_kwargs)
        self.tasks = tasks
        self.out_type = out_type
        #: Per stage, which stream each block runs and which stream each task's head reads.
        self.plan: List[StagePlan] = plan
        self.branch_mode = branch_mode
        self.task_stages = tuple(i for i, plan in enumerate(self.plan) if plan.branches)
        self.min_pretrained_fraction = min_pretrained_fraction
        self.with_cp_branches = with_cp_branches
        self.official_window_rule = official_window_rule
        if official_window_rule:
            apply_official_window_rule(self)
        if adapter is not None:
            self._inject(dict(adapter), adapted_layers, adapted_blocks, task_layers)
        self.apply_trainable_policy(trainable)

    # ----------------------------------------------------------- building
    @staticmethod
    def _resolve_groups(tasks, num_stages: int, task_stages, task_groups, can_branch: bool):
        """The per-stage partition from ``task_groups`` or ``task_stages`` (never both)."""
        if task_groups is not None and task_stages is not None:
            raise ValueError('give task_groups or task_stages, not both (task_stages=[i, ...] is task_groups with '
                             'one task per group in those stages)')
        shared_only = [[list(tasks)]] * num_stages
        if task_groups is None:
            task_stages = range(num_stages) if task_stages is None else task_stages
            if not set(task_stages) <= set(range(num_stages)):
                raise ValueError(f'task_stages {list(task_stages)} must be stage indices < {num_stages}')
            # plain linears or no task layers: nothing to branch, every task reads the shared stream
            return groups_from_task_stages(task_stages, tasks, num_stages) if can_branch else shared_only
        groups = normalise_groups(task_groups, tasks, num_stages)
        if not can_branch and any(len(g) > 1 for g in groups):
            raise ValueError(f'task_groups {[[list(g) for g in s] for s in groups]} branch, but the backbone has '
                             'no task-specific layers to branch with (adapter=None or task_layers=()); '
                             'give an adapter and task_layers, or share every stage')
        return groups

    def _inject(self, adapter: Dict, adapted_layers, adapted_blocks, task_layers) -> Dict[str, nn.Module]:
        """Replace the selected linears by ``adapter`` layers; returns them by qualified name."""
        cls = MODELS.get(adapter['type']) if isinstance(adapter['type'], str) else adapter['type']
        if cls is None:
            raise KeyError(f"adapter type {adapter['type']!r} is not registered")
        params = inspect.signature(cls).parameters
        targets, overrides = [], []
        for i, stage in enumerate(self.stages):
            depth = len(stage.blocks)
            blocks = range(depth) if adapted_blocks is None else sorted({b % depth for b in adapted_blocks[i]})
            for j in blocks:
                for layer in adapted_layers:
                    name = f'stages.{i}.blocks.{j}.{LAYER_PATHS[layer]}'
                    args = {k: (v[i] if k in PER_STAGE_KEYS and isinstance(v, (list, tuple)) else v)
                            for k, v in adapter.items() if k != 'type'}
                    if layer == 'qkv' and 'num_splits' in params:
                        args['num_splits'] = 3
                    shared, keys = layer_paths(self.plan[i].routes[j], layer in task_layers)
                    if keys:
                        args['tasks'] = keys
                    if not shared:  # nothing reads this layer's shared output
                        args['shared'] = False
                    targets.append(re.escape(name))
                    overrides.append(dict(pattern=re.escape(name), **args))
        if not targets:
            raise ValueError('the adapter config selects no layer (adapted_layers/adapted_blocks are empty)')
        return inject_adapters(self, dict(adapter=dict(type=cls), target_modules=targets, overrides=overrides))

    def apply_trainable_policy(self, policy: Union[str, Sequence[str]]) -> Dict[str, int]:
        """Set ``requires_grad`` of every backbone parameter by ``policy``.

        Returns:
            The counts of :func:`ditask_mm.adapters.set_trainable`.
        """
        if isinstance(policy, str):
            policy = POLICY_ALIASES.get(policy, policy)
            if policy == 'frozen':
                return set_trainable(self, adapters=False)
            if policy not in TRAINABLE_POLICIES:
                raise KeyError(f'unknown trainable policy {policy!r}; choose from '
                               f'{sorted([*TRAINABLE_POLICIES, "frozen", *POLICY_ALIASES])} or give patterns')
            patterns = TRAINABLE_POLICIES[policy]
        else:
            patterns = list(policy)
        return set_trainable(self, trainable=patterns)

    # ------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """Load ``init_cfg``'s pretrained checkpoint, or initialise from scratch.

        A pretrained checkpoint in official, mmseg, mmpretrain or timm format
        is converted, loaded and checked (:func:`.swin_checkpoint.load_pretrained_swin`), and
        the SVD caches of the adapted layers are rebuilt from the new weights.
        """
        if self.init_cfg is not None and self.init_cfg.get('type') == 'Pretrained':
            from .swin_checkpoint import load_pretrained_swin
            load_pretrained_swin(self, self.init_cfg['checkpoint'], min_fraction=self.min_pretrained_fraction)
        else:
            super().init_weights()
            with torch.no_grad():  # mmseg initialises nn.Linear only; adapters wrap theirs
                for _, layer in adapter_layers(self):
                    trunc_normal_(layer.weight, std=.02)
                    if layer.bias is not None:
                        layer.bias.zero_()
        self.refresh_svd_caches()
        self._is_init = True

    def refresh_svd_caches(self) -> int:
        """Recompute the SVD of every DiTASK layer from its current weight; returns how many."""
        return refresh_svd_caches(self)

    @property
    def out_channels(self) -> List[int]:
        """Channels of the four maps :meth:`forward` returns per task."""
        dims = list(self.num_features)
        if self.out_type == 'pre_merge':
            return dims
        return [2 * d for d in dims[:-1]] + [dims[-1]]

    # ------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Dict[str, List[Tensor]]:
        """Multi-task features.

        Every DiTASK layer warps its own spectrum here; a caller that enters
        :func:`ditask_mm.adapters.batched_spectra` around the call (the
        segmentor's ``extract_feat`` does) gets the same features from a few
        batched CPAB calls.

        Args:
            x: Images, ``(B, 3, H, W)``.

        Returns:
            ``{task: [f1, f2, f3, f4]}`` of ``(B, C_i, H_i, W_i)`` maps (see
            the module docstring for the two layouts).
        """
        x, hw = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + self.absolute_pos_embed
        streams: Dict[Optional[str], Tensor] = {None: self.drop_after_pos(x)}
        outs: Dict[str, List[Tensor]] = {t: [] for t in self.tasks}
        for i, (stage, plan) in enumerate(zip(self.stages, self.plan)):
            for block, routes in zip(stage.blocks, plan.routes):
                streams = self._run_block(block, streams, hw, routes)
            if self.out_type == 'pre_merge':
                norm = getattr(self, f'norm{i}')
                maps = {k: self._to_map(norm(streams[k]), hw) for k in dict.fromkeys(plan.task_keys.values())}
                for t in self.tasks:
                    outs[t].append(maps[plan.task_keys[t]])
            if stage.downsample is None:
                if self.out_type == 'post_merge':
                    for t in self.tasks:
                        outs[t].append(self._to_map(streams[plan.task_keys[t]], hw))
                continue
            # post_merge: PatchMerging of every stream a head reads, else only of what the next stage reads
            merging = plan.streams_at_end() if self.out_type == 'post_merge' else plan.carry
            merged, hw = self._merge(stage.downsample, {k: streams[k] for k in merging}, hw)
            if self.out_type == 'post_merge':
                for t in self.tasks:
                    outs[t].append(self._to_map(merged[plan.task_keys[t]], hw))
            streams = {k: merged[k] for k in plan.carry}
        return outs

    def _run_block(self, block: nn.Module, streams: Dict[Optional[str], Tensor], hw,
                   routes) -> Dict[Optional[str], Tensor]:
        """One block over its routes; a branched one checkpointed if asked (see ``with_cp_branches``)."""
        if routes == SHARED_ONLY or not ((self.with_cp_branches or block.with_cp) and torch.is_grad_enabled()):
            return routed_block_forward(block, streams, hw, routes)
        spectra = capture_spectra(block)  # the recomputation must read the same spectra
        keys = list(dict.fromkeys(src for _, src in routes))

        def run(*inputs: Tensor):
            with use_spectra(spectra):
                result = routed_block_forward(block, dict(zip(keys, inputs)), hw, routes)
            return tuple(result[out] for out, _ in routes)
        outputs = cp.checkpoint(run, *[streams[k] for k in keys], use_reentrant=False)
        return {out: y for (out, _), y in zip(routes, outputs)}

    @staticmethod
    def _merge(downsample: nn.Module, streams: Dict[Optional[str], Tensor], hw):
        """PatchMerging of several streams in one call; returns them by key and the new ``(H, W)``."""
        merged, next_hw = downsample(torch.cat(list(streams.values()), 0), hw)
        return dict(zip(streams, merged.chunk(len(streams), 0))), next_hw

    @staticmethod
    def _to_map(tokens: Tensor, hw) -> Tensor:
        B, _, C = tokens.shape
        return tokens.view(B, hw[0], hw[1], C).permute(0, 3, 1, 2).contiguous()


@MODELS.register_module()
class DiTASKSwinTransformer(MultiTaskSwinTransformer):
    """DiTASK's Swin: :class:`MultiTaskSwinTransformer` with DiTASK adapters.

    ``adapter`` is merged over :data:`DITASK_DEFAULT_ADAPTER` (the paper's
    tessellations, as in the base config), so ``None`` or a partial dict still
    gives DiTASK; θ is identity-initialised unless the adapter says otherwise
    (``theta_init='kaiming', main_path_dropout=0.05, ...`` reproduce the public
    code's quirks).
    """

    def __init__(self, tasks: Sequence[str], adapter: Optional[Dict] = None, **kwargs) -> None:
        super().__init__(tasks, adapter={**DITASK_DEFAULT_ADAPTER, **(adapter or {})}, **kwargs)


@MODELS.register_module()
class MTLoRASwinTransformer(MultiTaskSwinTransformer):
    """MTLoRA's Swin: ``adapter`` merged over :data:`MTLORA_DEFAULT_ADAPTER` (shared rank 64, per-task rank 4)."""

    def __init__(self, tasks: Sequence[str], adapter: Optional[Dict] = None, **kwargs) -> None:
        super().__init__(tasks, adapter={**MTLORA_DEFAULT_ADAPTER, **(adapter or {})}, **kwargs)
