"""Which modules of a model get which adapter: :class:`AdapterConfig`.

A config names the adapter (a registered type and its arguments), the modules
to adapt by regular expression on their qualified names (``re.fullmatch``,
as printed by ``model.named_modules()``), and optional per-pattern overrides,
in the spirit of peft's ``target_modules`` and ``rank_pattern``. Example, a
shared DiTASK transform on every linear of mmseg's Swin with q, k and v
split, and task transforms on the last block of each stage (tessellations 64
and 4 are the paper's; ``configs/_base_/models/ditask_swin-t.py`` sets them)::

    AdapterConfig(
        adapter=dict(type='DiTASKLinear', tessellation_size=64),
        target_modules=[r'.*\\.w_msa\\.(qkv|proj)', r'.*\\.ffn\\.layers\\.(0\\.0|1)'],
        overrides=[dict(pattern=r'.*\\.qkv', num_splits=3),
                   dict(pattern=r'stages\\.\\d+\\.blocks\\.1\\.(w_msa\\.proj|ffn).*',
                        tasks=['semseg', 'normals'], task_tessellation_size=4)])
"""
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Union


@dataclass
class AdapterConfig:
    """Where adapters go and how they are built.

    Args:
        adapter: Registered adapter type and keyword arguments, e.g.
            ``dict(type='LoRALinear', rank=8)``.
        target_modules: Regular expressions; a module is adapted when its
            qualified name fully matches one of them.
        overrides: Dicts with a ``pattern`` key plus adapter arguments; for a
            target whose name fully matches ``pattern`` the arguments are
            merged into ``adapter`` (later overrides win).
        exclude_modules: Regular expressions for targets to leave alone.
        allow_unmatched: If False (default), a target pattern that matches no
            module raises, so that a typo never silently disables adaptation.
    """

    adapter: Dict[str, Any]
    target_modules: Sequence[str]
    overrides: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    exclude_modules: Sequence[str] = field(default_factory=tuple)
    allow_unmatched: bool = False

    def __post_init__(self) -> None:
        if 'type' not in self.adapter:
            raise KeyError(f"adapter config needs a 'type' key, got {dict(self.adapter)}")
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        if not self.target_modules:
            raise ValueError('target_modules is empty: name the modules to adapt')
        for over in self.overrides:
            if 'pattern' not in over:
                raise KeyError(f"every override needs a 'pattern' key, got {dict(over)}")
        for pattern in [*self.target_modules, *self.exclude_modules,
                        *(o['pattern'] for o in self.overrides)]:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f'invalid regular expression {pattern!r}: {err}') from err

    @classmethod
    def build(cls, cfg: Union['AdapterConfig', Mapping[str, Any]]) -> 'AdapterConfig':
        """Accept an :class:`AdapterConfig` or a plain (config-file) dict."""
        if isinstance(cfg, cls):
            return cfg
        return cls(**dict(cfg))

    def is_target(self, name: str) -> bool:
        """Whether the module called ``name`` is to be adapted."""
        return (any(re.fullmatch(p, name) for p in self.target_modules)
                and not any(re.fullmatch(p, name) for p in self.exclude_modules))

    def arguments_for(self, name: str) -> Dict[str, Any]:
        """Adapter arguments (``type`` included) for the module ``name``."""
        args = dict(self.adapter)
        for over in self.overrides:
            if re.fullmatch(over['pattern'], name):
                args.update({k: v for k, v in over.items() if k != 'pattern'})
        return args

    def unmatched_patterns(self, names: Sequence[str]) -> List[str]:
        """Target patterns that match none of ``names``."""
        return [p for p in self.target_modules if not any(re.fullmatch(p, n) for n in names)]
