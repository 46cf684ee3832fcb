"""Parameter-efficient adapters for frozen linear layers.

The split follows peft:

* one adapted layer, what it computes: :class:`DiTASKLinear`
  (:mod:`.ditask`), :class:`LoRALinear` (:mod:`.lora`),
  :class:`MTLoRALinear` (:mod:`.mtlora`), all :class:`AdapterLayer`
  (:mod:`.base`), and :class:`DiTASKMultiheadAttention`
  (:mod:`.ditask_attention`) for ``nn.MultiheadAttention``;
* which modules of a model get adapted, chosen by name pattern:
  :class:`AdapterConfig` (:mod:`.config`);
* putting them in and choosing what trains: :func:`inject_adapters`,
  :func:`set_trainable`, :func:`adapter_task` (:mod:`.injection`).
"""
from .base import AdapterLayer, adapter_layers
from .config import AdapterConfig
from .ditask import DiTASKLinear
from .ditask_attention import DiTASKMultiheadAttention
from .injection import adapter_task, inject_adapters, set_trainable
from .lora import LoRALinear
from .merged import MergedTaskLinear, merge_adapters
from .mtlora import MTLoRALinear
from .svd_cache import SVDCache

__all__ = [
    'AdapterLayer', 'AdapterConfig', 'DiTASKLinear', 'DiTASKMultiheadAttention', 'LoRALinear', 'MTLoRALinear', 'MergedTaskLinear', 'SVDCache',
    'adapter_layers', 'adapter_task', 'inject_adapters', 'merge_adapters', 'set_trainable'
]
