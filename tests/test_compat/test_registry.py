"""ditask_mm's registry nodes are children of mmseg's, in scope ditask_mm."""
import torch.nn as nn
from mmengine.registry import init_default_scope
from mmseg import registry as mmseg_registry

import ditask_mm.models  # noqa: F401  (imports mmseg.models for parent lookup)
from ditask_mm import registry


def test_nodes_are_scoped_children_of_mmseg():
    for name in registry.__all__[1:]:
        node = getattr(registry, name)
        assert node.scope == 'ditask_mm', name
        assert node.parent is getattr(mmseg_registry, name), name


def test_mmseg_types_resolve_through_the_child_and_ours_do_not_leak():
    init_default_scope('ditask_mm')
    swin_cls = registry.MODELS.get('SwinTransformer')
    assert swin_cls is mmseg_registry.MODELS.get('SwinTransformer')
    assert registry.MODELS.get('mmseg.SwinTransformer') is swin_cls

    @registry.MODELS.register_module(force=True)
    class DitaskRegistryProbe(nn.Module):
        pass

    assert registry.MODELS.get('DitaskRegistryProbe') is DitaskRegistryProbe
    assert 'DitaskRegistryProbe' not in mmseg_registry.MODELS.module_dict
    assert isinstance(registry.MODELS.build(dict(type='DitaskRegistryProbe')), DitaskRegistryProbe)
    registry.MODELS._module_dict.pop('DitaskRegistryProbe')
