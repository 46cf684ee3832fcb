"""ditask_mm's registry nodes: children of mmseg's, in scope ``ditask_mm``.

Configs set ``default_scope = 'ditask_mm'``. A bare ``type='X'`` is looked up
here first and then in mmseg's node (and mmengine's root), so mmseg classes
stay reachable without a prefix and ours do not clash with mmseg names. Parent
lookup only finds mmseg classes once ``mmseg.models`` has been imported
(``Registry.get`` does not trigger the parent's lazy import);
``ditask_mm.models`` imports it.
"""
from typing import List, Optional

from mmengine.registry import Registry
from mmseg import registry as mmseg_registry

SCOPE = 'ditask_mm'


def _child(parent: Registry, locations: Optional[List[str]] = None) -> Registry:
    # ``locations`` must name packages that exist: mmengine imports each one
    # the first time the node is queried. Nodes whose package has not landed
    # yet get none; add it together with the package.
    return Registry(parent.name, parent=parent, scope=SCOPE, locations=locations or [])


MODELS = _child(mmseg_registry.MODELS, ['ditask_mm.models'])
DATASETS = _child(mmseg_registry.DATASETS, ['ditask_mm.datasets'])
TRANSFORMS = _child(mmseg_registry.TRANSFORMS, ['ditask_mm.datasets'])
METRICS = _child(mmseg_registry.METRICS, ['ditask_mm.evaluation'])
EVALUATOR = _child(mmseg_registry.EVALUATOR)
HOOKS = _child(mmseg_registry.HOOKS, ['ditask_mm.engine'])
VISUALIZERS = _child(mmseg_registry.VISUALIZERS)
VISBACKENDS = _child(mmseg_registry.VISBACKENDS)
OPTIM_WRAPPER_CONSTRUCTORS = _child(mmseg_registry.OPTIM_WRAPPER_CONSTRUCTORS)
MODEL_WRAPPERS = _child(mmseg_registry.MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = _child(mmseg_registry.WEIGHT_INITIALIZERS)
LOOPS = _child(mmseg_registry.LOOPS)
RUNNERS = _child(mmseg_registry.RUNNERS, ['ditask_mm.engine'])

__all__ = [
    'SCOPE', 'MODELS', 'DATASETS', 'TRANSFORMS', 'METRICS', 'EVALUATOR', 'HOOKS', 'VISUALIZERS',
    'VISBACKENDS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS', 'LOOPS', 'RUNNERS'
]
