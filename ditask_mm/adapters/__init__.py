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
  :func:`set_trainable`, :func:`adapter_task` (:mod:`.injection`);
* running them fast: :func:`batched_spectra` (:mod:`.spectrum_batch`) warps
  every DiTASK spectrum of a model in a few batched CPAB calls, and
  :class:`ByteMaskDropout` (:mod:`.dropout`) is the adapters' dropout.
"""
from .base import AdapterLayer, adapter_layers
from .config import AdapterConfig
from .ditask import DiTASKLinear, refresh_svd_caches
from .ditask_attention import DiTASKMultiheadAttention
from .dropout import ByteMaskDropout
from .injection import adapter_task, inject_adapters, set_trainable
from .lora import LoRALinear
from .merged import MergedTaskLinear, merge_adapters
from .mtlora import MTLoRALinear
from .spectrum_batch import batched_spectra, capture_spectra, compute_spectra, use_spectra
from .svd_cache import SVDCache

__all__ = [
    'AdapterLayer', 'AdapterConfig', 'ByteMaskDropout', 'DiTASKLinear', 'DiTASKMultiheadAttention', 'LoRALinear',
    'MTLoRALinear', 'MergedTaskLinear', 'SVDCache', 'adapter_layers', 'adapter_task', 'batched_spectra',
    'capture_spectra', 'compute_spectra', 'inject_adapters', 'merge_adapters', 'refresh_svd_caches',
    'set_trainable', 'use_spectra'
]
