"""Why a pretrained Swin checkpoint cannot be loaded, told in terms a user can act on.

:func:`.swin_checkpoint.load_pretrained_swin` uses these helpers to turn
"the file holds another Swin" and "the file cannot be reached" into errors
that name the file, the architecture found in it, the one the model expects
and the config key to change:

* :func:`swin_arch_of` reads ``embed_dims`` (patch-embedding weight), the
  depth of every stage (highest block index) and the head counts (relative
  position tables) from mmseg-named tensors, so the same reading describes a
  converted checkpoint and the model itself;
* :func:`fit_error_message` builds the message of
  :class:`SwinCheckpointMismatchError`;
* :func:`read_pretrained_tensors` reads the file with the one checkpoint
  reader (:mod:`ditask_mm.models.checkpoint_file`) and turns its failures into
  :class:`PretrainedCheckpointNotFoundError` (with the config key) and, for an
  offline machine, :class:`PretrainedDownloadError` with the download hint.
"""
import http.client
import os.path as osp
import re
import urllib.error
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..checkpoint_file import CheckpointReadError, read_checkpoint
from ..checkpoint_fit import CheckpointMismatchError, ShapeMismatch, compare_state_dicts

#: Config key of the pretrained checkpoint of the DiTASK backbones.
CHECKPOINT_KEY = 'model.backbone.init_cfg.checkpoint'
#: Config key of the backbone's architecture.
ARCH_KEY = 'model.backbone.arch'
#: Display names of the standard architectures (``ARCH_SETTINGS`` keys).
STANDARD_LABELS = {'tiny': 'Swin-T', 'small': 'Swin-S', 'base': 'Swin-B', 'large': 'Swin-L'}
_BLOCK = re.compile(r'^stages\.(\d+)\.blocks\.(\d+)\.')
_STAGE = re.compile(r'^stages\.(\d+)\.')
_DOWNSAMPLE = re.compile(r'^stages\.(\d+)\.downsample\.')
_OUT_NORM = re.compile(r'^norm(\d+)\.')
_EMBED_KEY = 'patch_embed.projection.weight'
_TABLE_SUFFIX = 'attn.w_msa.relative_position_bias_table'
#: Settings that change tensor shapes without changing embed_dims or depths.
_OTHER_SETTINGS = 'num_heads, mlp_ratio, patch_size, in_channels or use_abs_pos_embed'
#: What a download raises when the address cannot be reached.
_NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)
#: ``(name, checkpoint shape, model shape)`` of a tensor whose shapes differ.
Shapes = ShapeMismatch


class SwinCheckpointMismatchError(RuntimeError):
    """A Swin checkpoint's tensors do not fit the model (names, shapes or coverage)."""


class PretrainedCheckpointNotFoundError(FileNotFoundError):
    """The local pretrained checkpoint named in the config does not exist."""


class PretrainedDownloadError(ConnectionError):
    """The pretrained checkpoint URL could not be downloaded (e.g. no network)."""


@dataclass(frozen=True)
class SwinArchInfo:
    """What a set of mmseg-named Swin tensors says about its architecture.

    Attributes:
        embed_dims: Output channels of the patch embedding (``None`` if absent).
        depths: Blocks per stage (``0`` for a stage without blocks).
        num_heads: Heads per stage from the first relative-position table
            found in the stage (``None`` where the stage has none).
    """
    embed_dims: Optional[int]
    depths: Tuple[int, ...]
    num_heads: Tuple[Optional[int], ...]

    @property
    def standard_name(self) -> Optional[str]:
        """``'tiny'``/``'small'``/``'base'``/``'large'`` when embed_dims and depths match one."""
        from .multitask_swin import ARCH_SETTINGS
        for name, settings in ARCH_SETTINGS.items():
            if (settings['embed_dims'], tuple(settings['depths'])) == (self.embed_dims, self.depths):
                return name
        return None

    @property
    def is_complete(self) -> bool:
        """Whether every stage has blocks and the patch embedding is present."""
        return self.embed_dims is not None and bool(self.depths) and all(self.depths)

    def same_shape_as(self, other: 'SwinArchInfo') -> bool:
        """Whether both have the same ``embed_dims`` and ``depths``."""
        return (self.embed_dims, self.depths) == (other.embed_dims, other.depths)

    def describe(self) -> str:
        """``"Swin-S (arch='small': embed_dims=96, depths=(2, 2, 18, 2))"`` or the bare dims."""
        dims = f'embed_dims={self.embed_dims if self.embed_dims is not None else "?"}, depths={self.depths}'
        name = self.standard_name
        return f"{STANDARD_LABELS[name]} (arch='{name}': {dims})" if name else dims

    def short_name(self) -> str:
        """``'Swin-S'`` for a standard architecture, else :meth:`describe`."""
        name = self.standard_name
        return STANDARD_LABELS[name] if name else self.describe()

    def config_value(self) -> str:
        """The value of ``model.backbone.arch`` that builds this architecture."""
        name = self.standard_name
        if name:
            return repr(name)
        heads = tuple(self.num_heads) if all(h is not None for h in self.num_heads) else '(...)'
        return f'dict(embed_dims={self.embed_dims}, depths={self.depths}, num_heads={heads})'


def swin_arch_of(state: Mapping[str, torch.Tensor]) -> SwinArchInfo:
    """Read the architecture of mmseg-named Swin tensors (a converted checkpoint or a model).

    Args:
        state: ``{name: tensor}`` with mmseg ``SwinTransformer`` names
            (``patch_embed.projection.weight``, ``stages.i.blocks.j.*``).

    Returns:
        The embed dims, per-stage depths and head counts found.
    """
    embed = state.get(_EMBED_KEY)
    # a stage is there if it has tensors, an output norm, or the stage before merges into it
    stages = [int(m.group(1)) for m in map(_STAGE.match, state) if m]
    stages += [int(m.group(1)) for m in map(_OUT_NORM.match, state) if m]
    stages += [int(m.group(1)) + 1 for m in map(_DOWNSAMPLE.match, state) if m]
    num_stages = max(stages) + 1 if stages else 0
    depths = [0] * num_stages
    heads: List[Optional[int]] = [None] * num_stages
    for key, value in state.items():
        match = _BLOCK.match(key)
        if not match:
            continue
        stage, block = int(match.group(1)), int(match.group(2))
        depths[stage] = max(depths[stage], block + 1)
        if key.endswith(_TABLE_SUFFIX) and heads[stage] is None and value.dim() == 2:
            heads[stage] = int(value.shape[1])
    return SwinArchInfo(embed_dims=int(embed.shape[0]) if embed is not None else None,
                        depths=tuple(depths), num_heads=tuple(heads))


def name_listing(names: Sequence[str], n: int = 5) -> str:
    """The first ``n`` names joined by commas, ``...`` when there are more."""
    return ', '.join(names[:n]) + (', ...' if len(names) > n else '')


def sort_checkpoint_tensors(
        converted: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor],
        is_leftover: Callable[[str], bool]) -> Tuple[Dict[str, torch.Tensor], List[str], List[str], List[Shapes]]:
    """Split converted checkpoint tensors by how they relate to the model.

    Args:
        converted: mmseg-named checkpoint tensors (tables already resized).
        model_state: The model's state dict.
        is_leftover: Tells the names a model may lack without being another
            architecture (output norms, adapters).

    Returns:
        ``(to_load, leftovers, foreign, mismatched)``: the tensors that fit,
        the tolerated names the model lacks, the other names it lacks, and
        ``(name, checkpoint shape, model shape)`` of the shape mismatches in
        the model's order (the patch embedding first).
    """
    comparison = compare_state_dicts(model_state, converted)
    refused = set(comparison.unexpected) | {key for key, _, _ in comparison.shape_mismatches}
    to_load = {key: value for key, value in converted.items() if key not in refused}
    leftovers = [key for key in comparison.unexpected if is_leftover(key)]
    foreign = [key for key in comparison.unexpected if not is_leftover(key)]
    position = {key: i for i, key in enumerate(model_state)}
    mismatched = sorted(comparison.shape_mismatches, key=lambda item: position[item[0]])
    return to_load, leftovers, foreign, mismatched


def arch_hint(source: str, found: SwinArchInfo, expected: SwinArchInfo) -> str:
    """Sentences naming both architectures and how to make them agree.

    Args:
        source: The checkpoint path or URL (its file name is quoted).
        found: Architecture read from the checkpoint.
        expected: Architecture of the model.

    Returns:
        The hint; it blames other settings when both architectures agree.
    """
    file = url_file_name(source) if source.startswith(('http://', 'https://')) else osp.basename(source)
    if found.same_shape_as(expected):
        return (f"The checkpoint has the model's architecture ({expected.describe()}), so another setting "
                f'differs ({_OTHER_SETTINGS}) or the file is damaged. Fix: use an unmodified checkpoint '
                f'of that architecture in `{CHECKPOINT_KEY}`.')
    return (f'The checkpoint holds another Swin: found {found.describe()} in {file}, but the model is '
            f"{expected.describe()}. Fix: use the weights of the model's architecture "
            f'({expected.short_name()}) in `{CHECKPOINT_KEY}`, or set '
            f'`{ARCH_KEY}={found.config_value()}` to match {file}.')


def fit_error_message(source: str, fmt: str, foreign: Sequence[str],
                      mismatched: Sequence[Shapes],
                      found: SwinArchInfo, expected: SwinArchInfo) -> str:
    """Message of a checkpoint whose tensor names or shapes do not fit the model.

    Args:
        source: Checkpoint path, URL or ``'<in-memory state dict>'``.
        fmt: Detected checkpoint format.
        foreign: Converted names the model lacks (not tolerated leftovers).
        mismatched: ``(name, checkpoint shape, model shape)`` of the tensors
            whose shapes differ after the relative-position tables were resized.
        found: Architecture read from the checkpoint.
        expected: Architecture of the model.

    Returns:
        A first line naming the file, the format and the first offending
        tensors, then :func:`arch_hint`.
    """
    parts = []
    if foreign:
        parts.append(f'{len(foreign)} checkpoint tensors have no place in the model [{name_listing(foreign)}]')
    if mismatched:
        key, ckpt_shape, model_shape = mismatched[0]
        more = f' (and {len(mismatched) - 1} more)' if len(mismatched) > 1 else ''
        parts.append(f'shape mismatch for {key!r} after conversion: checkpoint {tuple(ckpt_shape)} vs '
                     f'model {tuple(model_shape)}{more}')
    return (f'Swin checkpoint {source} ({fmt} format) does not fit the model: {"; ".join(parts)}.\n'
            + arch_hint(source, found, expected))


def coverage_error_message(source: str, fmt: str, fraction: float, min_fraction: float, num_loaded: int,
                           missing: Sequence[str], found: SwinArchInfo, expected: SwinArchInfo) -> str:
    """Message of a checkpoint that covers less than ``min_fraction`` of the model's weights.

    Args:
        source: Checkpoint path, URL or ``'<in-memory state dict>'``.
        fmt: Detected checkpoint format.
        fraction: Loaded fraction (by elements) of the expected weights.
        min_fraction: The required fraction.
        num_loaded: How many expected tensors were found.
        missing: Names of the expected tensors not found.
        found: Architecture read from the checkpoint.
        expected: Architecture of the model.

    Returns:
        The coverage line, plus :func:`arch_hint` when the checkpoint is a
        complete Swin of another architecture (not just a truncated file).
    """
    message = (f'Swin checkpoint {source} (detected format: {fmt}) provided only {fraction:.1%} of '
               f'the expected backbone weights ({num_loaded}/{num_loaded + len(missing)} tensors); '
               f'expected at least {min_fraction:.0%} of the parameters of an mmseg-named '
               f'SwinTransformer matching the model. First missing keys: {name_listing(missing, 8)}')
    if found.is_complete and not found.same_shape_as(expected):
        message += '\n' + arch_hint(source, found, expected)
    return message


def url_file_name(url: str) -> str:
    """Basename of a URL's path (query and fragment dropped)."""
    return osp.basename(urllib.parse.urlparse(url).path.rstrip('/')) or 'checkpoint.pth'


def download_error_message(url: str, err: BaseException) -> str:
    """The "download it yourself" message for a URL that could not be loaded.

    Args:
        url: The checkpoint URL of the config.
        err: What the download raised.

    Returns:
        ``"no network: download FILE from URL and set `...checkpoint=/path/to/FILE`"``
        (``"download failed (...)"`` when a server answered with an error or
        the download could not be written, e.g. a read-only torch.hub cache).
    """
    file = url_file_name(url)
    if isinstance(err, urllib.error.HTTPError):
        cause = f'download failed (HTTP {err.code} {err.reason})'
    elif isinstance(err, _NETWORK_ERRORS):
        cause = 'no network'
    else:
        cause = f'download failed ({type(err).__name__})'
    return (f'{cause}: download {file} from {url} and set `{CHECKPOINT_KEY}=/path/to/{file}` '
            f'(the download raised {type(err).__name__}: {err})')


def read_pretrained_tensors(path: str, map_location: Any = 'cpu') -> Dict[str, torch.Tensor]:
    """The flat tensors of a pretrained Swin file, with errors that name the config key to fix.

    :func:`ditask_mm.models.checkpoint_file.read_checkpoint` reads the file;
    this turns its failures into the pretrained loader's errors.

    Args:
        path: Local ``.pth``/``.pt``/``.bin``/``.safetensors`` file or an
            ``http(s)://`` URL (mmengine's loader, torch.hub cache).
        map_location: Device the tensors are mapped to.

    Returns:
        The file's state dict (unwrapped from ``state_dict``/``model``/``module``).

    Raises:
        PretrainedCheckpointNotFoundError: A local ``path`` does not exist
            (a ``FileNotFoundError``).
        PretrainedDownloadError: A URL cannot be downloaded (a
            ``ConnectionError``; the message says where to put the file).
        ValueError: The file is empty or holds no tensors.
        CheckpointReadError: It is truncated or corrupt (a ``RuntimeError``).
    """
    try:
        contents = read_checkpoint(path, map_location=map_location)
    except CheckpointReadError as err:
        if err.reason == 'missing':
            raise PretrainedCheckpointNotFoundError(missing_file_message(err.path)) from None
        if err.reason == 'empty':
            raise ValueError(f'Swin checkpoint {err.path!r} is an empty file (no tensors)') from None
        raise
    except (OSError, http.client.HTTPException) as err:
        if not str(path).startswith(('http://', 'https://')):
            raise
        raise PretrainedDownloadError(download_error_message(str(path), err)) from err
    except CheckpointMismatchError as err:
        raise ValueError(f'Swin checkpoint {str(path)!r} holds no tensors ({err})') from None
    if not contents.state_dict:
        raise ValueError(f'Swin checkpoint {contents.path!r} holds no tensors '
                         f'(top level: {type(contents.raw).__name__})')
    return contents.state_dict


def missing_file_message(path: str) -> str:
    """Message of a local checkpoint path that does not exist, with the config key to fix."""
    absolute = osp.abspath(path)
    shown = repr(path) + (f' (= {absolute})' if absolute != path else '')
    return (f'Swin checkpoint {shown} does not exist: set `{CHECKPOINT_KEY}` to an existing file '
            f'(or to the https URL of the official weights on a machine with network)')
