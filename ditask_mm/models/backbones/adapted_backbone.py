"""Adapters on any backbone, by config: :class:`AdaptedBackbone`.

The wrapper builds a backbone from any registry (``mmseg.VisionTransformer``,
``mmpretrain.VisionTransformer``, ...), puts adapters into the linear layers
its ``target_modules`` patterns name (:func:`ditask_mm.adapters.inject_adapters`)
and freezes everything else but the ``trainable`` parameters. It plays the
role mmpretrain's ``LoRAModel`` plays there: no user code and no ``PYTHONPATH``
change to adapt a backbone. ``docs/backbones.md`` has the walk-through.
"""
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.model import BaseModule
from torch import Tensor

from ...adapters import AdapterConfig, inject_adapters, refresh_svd_caches, set_trainable
from ...registry import MODELS

#: Named ``trainable`` policies; a list of regular expressions is the alternative.
TRAINABLE_POLICIES = ('adapters', 'adapters_norms', 'all', 'frozen')
POLICY_ALIASES = {'theta': 'adapters', 'theta_norms': 'adapters_norms'}
#: Module types whose parameters ``'adapters_norms'`` trains.
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm)
#: Pretrained init types whose coverage is checked after ``init_weights``.
PRETRAINED_TYPES = ('Pretrained', 'Pretrained_Part')


def _build_inner(cfg: Mapping[str, Any]) -> nn.Module:
    """Build the inner backbone, importing mmpretrain's models first when the type names them."""
    type_ = cfg.get('type') if isinstance(cfg, Mapping) else None
    if type_ is None:
        raise KeyError(f"AdaptedBackbone: backbone needs a 'type' (e.g. 'mmseg.VisionTransformer'), got {cfg!r}")
    if isinstance(type_, str) and type_.startswith('mmpretrain.'):
        import mmpretrain.models  # noqa: F401  (registers mmpretrain's classes; imports under our compat patches)
    if isinstance(type_, str) and MODELS.get(type_) is None:
        raise KeyError(f'AdaptedBackbone: backbone type {type_!r} is not registered; use a scoped name such as '
                       "'mmseg.VisionTransformer' or 'mmpretrain.VisionTransformer'")
    return MODELS.build(dict(cfg))


def _share_parameters(original: nn.Module, adapted: nn.Module, name: str) -> None:
    """Make the plain module hold the adapter's current parameter tensors again.

    They are the same objects from injection on; a conversion that replaces
    parameter objects (``torch.__future__`` swap/overwrite settings) would
    break that, so they are re-attached before every swap.
    """
    if isinstance(original, nn.MultiheadAttention):
        original.in_proj_weight, original.in_proj_bias = adapted.in_proj_weight, adapted.in_proj_bias
        original.out_proj.weight, original.out_proj.bias = adapted.out_proj.weight, adapted.out_proj.bias
        original.bias_k, original.bias_v = adapted.bias_k, adapted.bias_v
    elif isinstance(original, nn.Linear):
        original.weight, original.bias = adapted.weight, adapted.bias
    adapted_ids = {id(p) for p in adapted.parameters()}
    if any(id(p) not in adapted_ids for p in original.parameters()):  # pragma: no cover (a new adapter kind)
        raise RuntimeError(f'AdaptedBackbone: the plain module {name} no longer shares its parameters with its '
                           f'adapter {type(adapted).__name__}; init_weights would initialise copies')


@MODELS.register_module()
class AdaptedBackbone(BaseModule):
    """Any backbone with adapters in its linear layers and a trainable policy.

    Design: the adapters are injected when the wrapper is built, and
    :meth:`init_weights` only makes them see the loaded weights. mmengine's
    ``Runner.train()`` builds the optimizer (and DDP wraps the model) before
    it calls ``init_weights()``, so parameters created there would never be
    optimised. Injecting at construction is safe because an adapter adopts the
    frozen layer's own ``weight``/``bias`` parameters (same tensors, same
    state-dict keys): :meth:`init_weights` swaps the original modules, which
    still hold those tensors, back in for the span of the inner backbone's
    ``init_weights``, so the inner backbone initialises or loads exactly as the
    plain one would (its ``isinstance(m, nn.Linear)`` loops included), and
    puts the adapters back. The SVD caches of the DiTASK layers are then
    recomputed from the loaded weights and the trainable policy re-applied.

    Weights and keys: the wrapper's state-dict keys are ``backbone.<inner
    keys>`` plus the adapters' own parameters (``...theta_shared``); the frozen
    weights keep the inner backbone's names. A checkpoint of the plain inner
    backbone loads through the inner ``init_cfg``
    (``dict(type='Pretrained', checkpoint=...)``), never through one on the
    wrapper. When that init is ``Pretrained``, :meth:`init_weights` checks
    that it wrote at least ``min_pretrained_fraction`` of the inner
    parameters: with ``strict=False`` loading, a file of another key format
    would otherwise load nothing, silently.

    Limitation: the adapters use their shared transform only. Per-task
    adapter paths (task streams, as
    :class:`~ditask_mm.models.backbones.MultiTaskSwinTransformer` builds) need
    a backbone whose forward knows about tasks; here every head reads the same
    features.

    Args:
        backbone: Config of the inner backbone, from any registry
            (``'mmseg.VisionTransformer'``, ``'mmpretrain.VisionTransformer'``,
            ...), with its own ``init_cfg``.
        adapter: Adapter type and arguments, e.g.
            ``dict(type='DiTASKLinear', tessellation_size=64)``.
        target_modules: Regular expressions (``re.fullmatch`` on the inner
            backbone's module names, as ``named_modules()`` prints them) of the
            layers to adapt.
        overrides: ``[dict(pattern=REGEX, **adapter_args)]`` merged into
            ``adapter`` for the matching layers (``num_splits=3`` on a fused
            qkv, ``type='DiTASKMultiheadAttention'`` on an
            ``nn.MultiheadAttention``).
        exclude_modules: Regular expressions of layers to leave alone.
        trainable: What trains: ``'adapters'`` (alias ``'theta'``, the
            default: the adapters' own parameters only), ``'adapters_norms'`` (alias
            ``'theta_norms'``: also every LayerNorm/GroupNorm/BatchNorm),
            ``'all'``, ``'frozen'``, or a list of regular expressions
            (``re.search`` on the inner parameter names) trained besides the
            adapters. The adapted layers' own weights never train.
        out_channels: Channels of each output map; ``None`` infers them from
            the inner backbone (its ``out_channels``, or its (patch
            embedding's) ``embed_dims`` once per ``out_indices``) when it can.
        min_pretrained_fraction: Least fraction of the inner parameters (by
            element) a ``Pretrained`` inner ``init_cfg`` must write; 0 turns
            the check off.
        init_cfg: Must be ``None``: weights go in the inner ``init_cfg``.

    Raises:
        ValueError: A target pattern matches no module (the message lists
            some of the backbone's linear layers), a ``trainable`` pattern
            matches no parameter, the adapter arguments set ``tasks``, or
            ``init_cfg`` is set on the wrapper.
        KeyError: An unknown inner type or ``trainable`` policy.
    """

    def __init__(self,
                 backbone: Dict[str, Any],
                 adapter: Dict[str, Any],
                 target_modules: Sequence[str],
                 overrides: Sequence[Mapping[str, Any]] = (),
                 exclude_modules: Sequence[str] = (),
                 trainable: Union[str, Sequence[str]] = 'adapters',
                 out_channels: Optional[Sequence[int]] = None,
                 min_pretrained_fraction: float = 0.9,
                 init_cfg: Optional[dict] = None) -> None:
        if init_cfg is not None:
            raise ValueError('AdaptedBackbone: init_cfg belongs to the inner backbone; move it to '
                             f'backbone.init_cfg (got init_cfg={init_cfg!r})')
        super().__init__(init_cfg=None)
        if not 0.0 <= min_pretrained_fraction <= 1.0:
            raise ValueError('AdaptedBackbone: min_pretrained_fraction must be in [0, 1], '
                             f'got {min_pretrained_fraction}')
        self.min_pretrained_fraction = float(min_pretrained_fraction)
        self.trainable = self._check_policy(trainable)
        with_tasks = ['adapter'] if adapter.get('tasks') else []
        with_tasks += [f"overrides[{i}] ({o.get('pattern')!r})" for i, o in enumerate(overrides) if o.get('tasks')]
        if with_tasks:
            raise ValueError(f'AdaptedBackbone: {", ".join(with_tasks)} set tasks, but the wrapper adapts with shared '
                             'transforms only (a plain backbone never calls task transforms); remove tasks, or use '
                             'DiTASKSwinTransformer for per-task paths')
        self.backbone = _build_inner(backbone)
        config = AdapterConfig(adapter=dict(adapter), target_modules=list(target_modules),
                               overrides=list(overrides), exclude_modules=list(exclude_modules))
        self._check_targets(config)
        modules = dict(self.backbone.named_modules())
        originals = {name: modules[name] for name in modules if name and config.is_target(name)}
        replaced = inject_adapters(self.backbone, config)
        # The plain modules hold the very tensors the adapters adopted; kept outside the module tree (a plain
        # dict, not registered) so that init_weights can show the inner backbone its own architecture.
        self._plain_modules: Dict[str, Tuple[nn.Module, nn.Module]] = {
            name: (originals[name], adapter_module) for name, adapter_module in replaced.items()}
        self._out_channels = None if out_channels is None else [int(c) for c in out_channels]
        self.apply_trainable_policy()

    # ------------------------------------------------------------ building
    @staticmethod
    def _check_policy(trainable: Union[str, Sequence[str]]) -> Union[str, List[str]]:
        if isinstance(trainable, str):
            policy = POLICY_ALIASES.get(trainable, trainable)
            if policy not in TRAINABLE_POLICIES:
                raise KeyError(f'AdaptedBackbone: unknown trainable policy {trainable!r}; choose from '
                               f'{sorted([*TRAINABLE_POLICIES, *POLICY_ALIASES])} or give a list of regular '
                               'expressions')
            return policy
        patterns = list(trainable)
        for pattern in patterns:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as err:
                raise ValueError(f'AdaptedBackbone: trainable pattern {pattern!r} is not a regular expression: {err}')
        return patterns

    def _check_targets(self, config: AdapterConfig) -> None:
        """Raise, listing some of the backbone's linear layers, if a target pattern matches nothing."""
        names = [n for n, _ in self.backbone.named_modules() if n]
        unmatched = config.unmatched_patterns(names)
        if not unmatched:
            return
        kinds = (nn.Linear, nn.MultiheadAttention)
        linears = [n for n, m in self.backbone.named_modules() if isinstance(m, kinds)]
        shown = linears[:6] + (['...'] + linears[-2:] if len(linears) > 8 else linears[6:])
        raise ValueError(f'AdaptedBackbone: target_modules patterns {unmatched} match no module of '
                         f'{type(self.backbone).__name__} (patterns are re.fullmatch-ed against module names). '
                         f'Its {len(linears)} nn.Linear/nn.MultiheadAttention layers include: {shown}')

    def apply_trainable_policy(self) -> Dict[str, int]:
        """Set ``requires_grad`` of every parameter by :attr:`trainable`; returns :func:`set_trainable`'s counts."""
        policy = self.trainable
        if policy == 'frozen':
            return set_trainable(self.backbone, adapters=False)
        if policy == 'adapters':
            return set_trainable(self.backbone)
        if policy == 'all':
            return set_trainable(self.backbone, trainable=[r'.*'])
        if policy == 'adapters_norms':
            norms = [re.escape(f'{name}.{p}') for name, m in self.backbone.named_modules() if isinstance(m, NORM_TYPES)
                     for p, _ in m.named_parameters(recurse=False)]
            return set_trainable(self.backbone, trainable=[f'^({"|".join(norms)})$'] if norms else [])
        return set_trainable(self.backbone, trainable=policy)

    # ------------------------------------------------------------- weights
    def _swap(self, plain: bool) -> None:
        """Put the plain modules (``plain=True``) or the adapters back in the inner backbone."""
        for name, (original, adapted) in self._plain_modules.items():
            if plain:
                _share_parameters(original, adapted, name)
            parent_name, _, child = name.rpartition('.')
            parent = self.backbone.get_submodule(parent_name) if parent_name else self.backbone
            setattr(parent, child, original if plain else adapted)

    def init_weights(self) -> None:
        """Run the inner backbone's ``init_weights`` on its plain architecture, then refresh the adapters.

        Raises:
            ValueError: A ``Pretrained`` inner ``init_cfg`` wrote less than
                ``min_pretrained_fraction`` of the inner parameters.
        """
        params = [(n, p) for n, p in self.backbone.named_parameters()]
        versions = [p._version for _, p in params]
        self._swap(plain=True)
        try:
            if hasattr(self.backbone, 'init_weights'):
                self.backbone.init_weights()
        finally:
            self._swap(plain=False)
        init_cfg = getattr(self.backbone, 'init_cfg', None)
        if isinstance(init_cfg, Mapping) and init_cfg.get('type') in PRETRAINED_TYPES:
            self._check_pretrained_coverage(params, versions, init_cfg)
        refreshed = self.refresh_svd_caches()
        counts = self.apply_trainable_policy()
        print_log(f'[ditask_mm] AdaptedBackbone({type(self.backbone).__name__}): weights initialised, '
                  f'{refreshed} SVD caches refreshed, {counts["trainable"]:,} of {counts["total"]:,} '
                  'backbone parameters train', logger=MMLogger.get_current_instance())
        self._is_init = True

    def _check_pretrained_coverage(self, params: List[Tuple[str, nn.Parameter]], versions: List[int],
                                   init_cfg: Mapping) -> None:
        """Raise if the pretrained load left too many inner parameters untouched (in-place writes bump ``_version``)."""
        untouched = [(n, p) for (n, p), v in zip(params, versions) if p._version == v]
        total = sum(p.numel() for _, p in params)
        loaded = total - sum(p.numel() for _, p in untouched)
        if total and loaded / total < self.min_pretrained_fraction:
            raise ValueError(
                f"AdaptedBackbone: the pretrained checkpoint {init_cfg.get('checkpoint')!r} wrote only "
                f'{loaded:,} of the {total:,} parameters of {type(self.backbone).__name__} '
                f'(min_pretrained_fraction={self.min_pretrained_fraction}); not loaded e.g. '
                f'{[n for n, _ in untouched[:5]]}. Its keys must be in the inner backbone\'s format: convert it '
                "(mmseg's ViT reads timm files only after tools/model_converters/vit2mmseg.py), or set "
                "backbone.init_cfg.prefix='backbone.' for a whole-model checkpoint")

    def refresh_svd_caches(self) -> int:
        """Recompute the SVD of every DiTASK layer from its current weight; returns how many."""
        return refresh_svd_caches(self)

    # ------------------------------------------------------------- forward
    @property
    def out_channels(self) -> List[int]:
        """Channels of each map :meth:`forward` returns (given, or inferred from the inner backbone)."""
        if self._out_channels is not None:
            return list(self._out_channels)
        inner = self.backbone
        channels = getattr(inner, 'out_channels', None)
        if isinstance(channels, (list, tuple)):
            return [int(c) for c in channels]
        indices = getattr(inner, 'out_indices', None)
        dims = getattr(inner, 'embed_dims', getattr(getattr(inner, 'patch_embed', None), 'embed_dims', None))
        if isinstance(dims, int) and isinstance(indices, (list, tuple)):
            return [dims] * len(indices)
        raise AttributeError(f'AdaptedBackbone cannot infer the output channels of {type(inner).__name__}; '
                             'set out_channels=[...] in its config (or in_channels in every head)')

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """The inner backbone's feature maps.

        Args:
            x: Images, ``(B, 3, H, W)``.

        Returns:
            The inner backbone's outputs as a tuple of ``(B, C_i, H_i, W_i)``
            maps.

        Raises:
            TypeError: The inner backbone returned something other than 4-D
                maps (e.g. mmpretrain's ViT without ``out_type='featmap'``).
        """
        outs = self.backbone(x)
        outs = (outs, ) if isinstance(outs, Tensor) else tuple(outs)
        for i, out in enumerate(outs):
            if not (isinstance(out, Tensor) and out.dim() == 4):
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise TypeError(f'AdaptedBackbone: output {i} of {type(self.backbone).__name__} is {got}, not a '
                                "(B, C, H, W) map; configure the inner backbone to return feature maps (mmpretrain's "
                                "VisionTransformer: out_type='featmap')")
        return outs
