"""Check a downloaded PASCAL_MT / NYUD_MT tree before training on it.

:func:`check_dataset_tree` asks the dataset classes themselves which files
each split and task needs (their ``_entries``, so the layout lives in one
place), counts what is present, and decodes a few samples of every file kind
with the loaders the pipeline uses (mmcv ``LoadImageFromFile`` and
:class:`~ditask_mm.datasets.transforms.LoadMultiTaskAnnotations`), checking
the dtype, shape and value range of what they return. Split sizes are
compared with the full archives (PASCAL_MT 4998 train / 5105 val, NYUD_MT
795 train / 654 val): a smaller split is a warning, a missing or unreadable
file an error (:class:`DatasetTreeError`). See docs/datasets.md.
"""
import os
import os.path as osp
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
from mmcv.transforms import LoadImageFromFile
from PIL import Image

from ..tasks import TASKS
from .base_multitask import BaseMultiTaskDataset, DirectoryIndex
from .constants import PARTS_CLASSES
from .nyud_mtl import NYUDMTLDataset
from .pascal_context_mtl import PascalContextMTLDataset
from .pascal_parts import load_mat
from .transforms.loading import LoadMultiTaskAnnotations, read_png

__all__ = ['ARCHIVES', 'DATASET_CLASSES', 'FULL_ARCHIVE_COUNTS', 'DatasetTreeError', 'SampleCheck', 'SplitReport',
           'TaskCount', 'TreeReport', 'check_dataset_tree', 'detect_dataset']

DATASET_CLASSES: Dict[str, Type[BaseMultiTaskDataset]] = {'pascal': PascalContextMTLDataset, 'nyud': NYUDMTLDataset}
#: Split sizes of the full archives (PASCAL-Context MTL split; the standard NYUD-v2 40-class split).
FULL_ARCHIVE_COUNTS: Dict[str, Dict[str, int]] = {
    'pascal': {'train': 4998, 'val': 5105},
    'nyud': {'train': 795, 'val': 654},
}
#: Archive name, download address (as in the public MTL-PyTorch / MTLoRA / DiTASK code) and a caveat.
ARCHIVES: Dict[str, Tuple[str, str, str]] = {
    'pascal': ('PASCAL_MT', 'https://data.vision.ee.ethz.ch/kmaninis/share/MTL/PASCAL_MT.tgz', ''),
    'nyud': ('NYUD_MT', 'https://drive.google.com/file/d/14EAEMXmd3zs2hIMY63UhHPSFPDAkiTzw/view',
             '; take the Google-Drive NYUD_MT.tgz: the older ASTMT NYUD_MT.tgz stores .mat labels and is not read'),
}
_IMAGE = 'image'
_NO_SPLIT_FILE = 'split file missing'
_PROBE_ID = '__probe__'
_DEPTH_WARN_MAX = 20.0  # metres; NYUD-v2 depth stays below ~10 m


class DatasetTreeError(RuntimeError):
    """A dataset tree is missing files or holds unreadable ones; ``paths`` names them, ``report`` has the rest."""

    def __init__(self, message: str, paths: Sequence[str] = (), report: Optional['TreeReport'] = None) -> None:
        super().__init__(message)
        self.paths = list(paths)
        self.report = report


@dataclass
class SampleCheck:
    """One decoded file: what is on disk (``raw``) and what the loader returned (``decoded``)."""

    path: str
    raw: str = ''
    decoded: str = ''


@dataclass
class TaskCount:
    """One task (or the images) of one split: ids whose files are all present, the missing files."""

    task: str
    found: int
    expected: int
    missing: List[str] = field(default_factory=list)
    num_missing: int = 0
    samples: List[SampleCheck] = field(default_factory=list)


@dataclass
class SplitReport:
    """One split: its id file, count against the full archive, per-task counts and notes."""

    split: str
    split_file: str
    num_ids: int = 0
    count_note: str = ''
    tasks: Dict[str, TaskCount] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)


@dataclass
class TreeReport:
    """The result of :func:`check_dataset_tree`; ``ok`` when nothing is missing or unreadable."""

    root: str
    dataset: str
    tasks: Tuple[str, ...]
    splits: List[SplitReport] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    error_paths: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def archive(self) -> str:
        return ARCHIVES[self.dataset][0]

    def error_message(self) -> str:
        """The :class:`DatasetTreeError` text: root, problems, expected layout, how to fix."""
        cls = DATASET_CLASSES[self.dataset]
        name, url, caveat = ARCHIVES[self.dataset]
        problems = '\n'.join(f'  - {e}' for e in self.errors)
        return (f'{name} tree at {self.root!r} is not usable ({len(self.errors)} problem(s)):\n{problems}\n'
                f'expected {cls.LAYOUT}\nfix: re-extract {name}.tgz ({url}) so that {self.root!r} is its '
                f'{name}/ directory{caveat}, then run tools/dataset_converters/check_mtl_dataset.py again')

    def format(self) -> str:
        """A readable report: per split, per task found/expected and each sample's shape and dtype."""
        lines = [f'{self.archive} tree at {self.root} ({DATASET_CLASSES[self.dataset].__name__}), '
                 f'tasks {", ".join(self.tasks)}']
        for split in self.splits:
            if split.count_note == _NO_SPLIT_FILE:
                lines.append(f'split {split.split}: {split.split_file} missing')
                continue
            lines.append(f'split {split.split}: {split.split_file} lists {split.num_ids} ids; {split.count_note}')
            for count in split.tasks.values():
                missing = f' ({count.num_missing} file(s) missing)' if count.num_missing else ''
                lines.append(f'  {count.task:<12} {count.found:>6}/{count.expected}{missing}')
                for sample in count.samples:
                    lines.append(f'      {osp.relpath(sample.path, self.root)}: {sample.raw}'
                                 + (f' -> {sample.decoded}' if sample.decoded else ''))
            lines.extend(f'  note: {note}' for note in split.notes)
        lines.extend(f'warning: {w}' for w in self.warnings)
        lines.extend(f'error: {e}' for e in self.errors)
        verdict = 'usable' if self.ok else f'NOT usable, {len(self.errors)} error(s)'
        lines.append(f'result: {verdict}, {len(self.warnings)} warning(s)')
        return '\n'.join(lines)


# --------------------------------------------------------------------------- layout
def _layout_score(cls: Type[BaseMultiTaskDataset], root: str) -> int:
    """How many of the directories the dataset class reads (asked from its own ``_entries``) exist under root."""
    dataset = cls(root, split='train', tasks=cls.AVAILABLE_TASKS, lazy_init=True, serialize_data=False)
    dirs = {osp.dirname(p) for p in dataset._entries([_PROBE_ID])[1]} | {osp.join(root, cls.SPLIT_DIR)}
    return sum(osp.isdir(d) for d in dirs)


def detect_dataset(root: str, dataset: Optional[str] = None) -> str:
    """``'pascal'`` or ``'nyud'`` from the directories present; checks a given ``dataset`` against them.

    Raises:
        DatasetTreeError: ``root`` is missing, matches neither layout, or
            looks like the other dataset than ``dataset``.
    """
    if not osp.isdir(root):
        raise DatasetTreeError(f'dataset root {root!r} does not exist or is not a directory; extract '
                               'PASCAL_MT.tgz / NYUD_MT.tgz and pass the PASCAL_MT/ or NYUD_MT/ directory', [root])
    if dataset is not None and dataset not in DATASET_CLASSES:
        raise ValueError(f'dataset must be one of {sorted(DATASET_CLASSES)} or None, got {dataset!r}')
    scores = {name: _layout_score(cls, root) for name, cls in DATASET_CLASSES.items()}
    best = max(scores, key=scores.get)
    if scores[best] == 0:
        nested = [osp.join(root, n) for n in sorted(os.listdir(root)) if osp.isdir(osp.join(root, n))
                  and any(_layout_score(c, osp.join(root, n)) for c in DATASET_CLASSES.values())]
        hint = (f'; {nested[0]!r} looks like one: pass that directory' if nested else
                '; expected ' + ' or '.join(c.LAYOUT for c in DATASET_CLASSES.values()))
        raise DatasetTreeError(f'{root!r} is neither a PASCAL_MT nor a NYUD_MT tree{hint}', [root])
    if dataset is None:
        if list(scores.values()).count(scores[best]) > 1:
            raise DatasetTreeError(f'{root!r} holds directories of both PASCAL_MT and NYUD_MT ({scores}); '
                                   'pass dataset= (--dataset) explicitly', [root])
        return best
    if scores[dataset] == 0:
        raise DatasetTreeError(f'{root!r} looks like a {ARCHIVES[best][0]} tree, not {ARCHIVES[dataset][0]} '
                               f'(dataset={dataset!r}); pass dataset={best!r} or the {ARCHIVES[dataset][0]}/ '
                               'directory', [root])
    return dataset


def _folder_note(folder: str, expected_ext: str) -> str:
    """Why a folder lacks files: it is missing, or holds only other extensions (e.g. another archive's .mat)."""
    if not osp.isdir(folder):
        return ' (directory missing)'
    found = Counter(osp.splitext(n)[1] for n in os.listdir(folder))
    return f' (the folder holds {dict(found.most_common(3))} instead)' if found and expected_ext not in found else ''


# --------------------------------------------------------------------------- samples
def _describe(array: np.ndarray) -> str:
    if array.size == 0:
        return f'{array.shape} {array.dtype} empty'
    return f'{array.shape} {array.dtype} values {array.min():.4g}..{array.max():.4g}'


def _raw(path: str) -> Tuple[str, Tuple[int, ...]]:
    """What a label file holds before decoding (for the report) and its array shape (``()`` for a ``.mat``)."""
    ext = osp.splitext(path)[1]
    if ext == '.png':
        with Image.open(path) as image:
            mode = image.mode
        array = read_png(path, (mode,), 'a PNG')
        return f'PNG mode {mode} {_describe(array)}', array.shape
    if ext == '.npy':
        array = np.load(path, mmap_mode='r', allow_pickle=False)
        return f'npy {array.shape} {array.dtype}', array.shape
    mat = load_mat(path)
    keys = sorted(k for k in mat if not k.startswith('__'))
    parts = (f'{k} {np.asarray(mat[k]).shape} ' + ('struct' if np.asarray(mat[k]).dtype.names else
                                                   str(np.asarray(mat[k]).dtype)) for k in keys)
    return 'mat ' + ', '.join(parts), ()


def _check_target(task: str, target: np.ndarray, dataset: str, image_shape: Tuple[int, int]) -> List[str]:
    """Problems of a decoded target against what the training pipeline expects."""
    spatial = target.shape[:2]
    problems = []
    channels = 3 if task == 'normals' else None
    if (target.ndim != (3 if channels else 2)) or (channels and target.shape[2] != channels) or spatial != image_shape:
        problems.append(f'shape {target.shape}, expected {image_shape + ((channels,) if channels else ())}')
    if task in ('semseg', 'human_parts'):
        num = len(DATASET_CLASSES[dataset].METAINFO['classes']) if task == 'semseg' else len(PARTS_CLASSES)
        bad = np.setdiff1d(np.unique(target), np.r_[np.arange(num), 255])
        if target.dtype != np.uint8 or bad.size:
            problems.append(f'{target.dtype} values {bad[:8].tolist()} outside 0..{num - 1} (and 255)')
    elif task in ('sal', 'edge'):
        if target.dtype != np.float32 or np.any((target != 0) & (target != 1)):
            problems.append(f'{target.dtype}, expected float32 values {{0, 1}}')
    elif not np.all(np.isfinite(target)):
        problems.append('holds NaN or inf values')
    elif task == 'normals' and np.abs(target).max(initial=0) > 1.001:
        problems.append(f'normal components up to {np.abs(target).max():.4g}, expected unit vectors in [-1, 1]')
    elif task == 'depth' and target.min(initial=0) < 0:
        problems.append(f'negative depth {target.min():.4g}, expected metres >= 0 (0 = invalid)')
    return problems


def _image_sample(path: str) -> Tuple[Optional[np.ndarray], str]:
    try:
        results = LoadImageFromFile()(dict(img_path=path))
    except Exception as exc:  # mmcv asserts, cv2 raises
        return None, f'{type(exc).__name__}: {exc}'
    if results is None or results.get('img') is None:
        return None, 'the image loader returned nothing'
    return results['img'], ''


# --------------------------------------------------------------------------- check
class _Checker:
    """State of one :func:`check_dataset_tree` call."""

    def __init__(self, report: TreeReport, sample: int, max_listed: int) -> None:
        self.report, self.sample, self.max_listed = report, sample, max_listed
        self.cls = DATASET_CLASSES[report.dataset]
        self.index = DirectoryIndex()
        self.images: Dict[str, Tuple[Optional[np.ndarray], str]] = {}

    def error(self, message: str, paths: Sequence[str]) -> None:
        self.report.errors.append(message)
        self.report.error_paths.extend(paths)

    def image(self, path: str) -> Tuple[Optional[np.ndarray], str]:
        if path not in self.images:
            self.images[path] = _image_sample(path)
        return self.images[path]

    def count(self, split: SplitReport, task: str, ids: List[str], files: List[List[str]]) -> TaskCount:
        count = TaskCount(task, 0, len(ids))
        missing = []
        for per_id in files:
            absent = [p for p in per_id if not self.index.has(p)]
            missing.extend(absent)
            count.found += not absent
        count.num_missing, count.missing = len(missing), missing[:self.max_listed]
        if missing:
            by_dir = Counter(osp.dirname(p) for p in missing)
            ext = {osp.dirname(p): osp.splitext(p)[1] for p in reversed(missing)}
            where = '; '.join(f'{osp.relpath(d, self.report.root)}/: {n}{_folder_note(d, ext[d])}'
                              for d, n in by_dir.items())
            listed = ''.join(f'\n      {p}' for p in count.missing)
            unlisted = len(missing) - len(count.missing)
            more = f'\n      ... and {unlisted} more' if unlisted else ''
            self.error(f'{task}, split {split.split}: {len(missing)} file(s) missing for '
                       f'{count.expected - count.found} of {count.expected} ids ({where}):{listed}{more}',
                       count.missing)
        return count

    def check_split(self, split: str, tasks: Sequence[str], expected: Optional[int]) -> SplitReport:
        datasets = {t: self.cls(self.report.root, split=split, tasks=[t], lazy_init=True, serialize_data=False)
                    for t in tasks}
        first = next(iter(datasets.values()))
        report = SplitReport(split, osp.relpath(first.split_file(split), self.report.root))
        if not osp.isfile(first.split_file(split)):
            folder = osp.dirname(first.split_file(split))
            known = sorted(n[:-4] for n in os.listdir(folder) if n.endswith('.txt')) if osp.isdir(folder) else []
            self.error(f'split file {first.split_file(split)!r} not found (splits present: {known}); expected one '
                       'image id per line', [first.split_file(split)])
            report.count_note = _NO_SPLIT_FILE
            return report
        ids = first.read_split_ids()
        report.num_ids = len(ids)
        self.compare_count(report, expected)
        if not ids:
            self.error(f'split file {first.split_file(split)!r} lists no ids; expected one image id per line',
                       [first.split_file(split)])
            return report
        if len(set(ids)) != len(ids):
            self.report.warnings.append(f'split {split}: {len(ids) - len(set(ids))} duplicate ids in '
                                        f'{report.split_file} (the dataset keeps them)')
        entries = first._entries(ids)[0]
        report.tasks[_IMAGE] = self.count(report, _IMAGE, ids, [[e['img_path']] for e in entries])
        self.sample_images(report, entries)
        for task, dataset in datasets.items():
            task_entries, _ = dataset._entries(ids)
            files = [[v for k, v in e.items() if k.endswith('_path') and k != 'img_path'] for e in task_entries]
            report.tasks[task] = self.count(report, task, ids, files)
            self.sample_task(report, task, task_entries, files)
            if task == 'human_parts' and hasattr(dataset, 'parts_cache_file'):
                self.check_parts_cache(report, dataset, ids)
        return report

    def compare_count(self, report: SplitReport, expected: Optional[int]) -> None:
        name = self.report.archive
        full = FULL_ARCHIVE_COUNTS[self.report.dataset]
        is_full = expected == full.get(report.split)
        what = f'the full {name} archive' if is_full else 'the expected count'
        if expected is None:
            report.count_note = f'no known size for split {report.split!r} of the full {name} archive'
        elif report.num_ids == expected:
            sizes = ' / '.join(f'{n} {s}' for s, n in full.items()) if is_full else str(expected)
            report.count_note = f'matches {what} ({sizes})'
        else:
            diff = expected - report.num_ids
            report.count_note = f'{abs(diff)} images {"fewer" if diff > 0 else "more"} than {what} ({expected})'
            self.report.warnings.append(f'split {report.split}: {report.count_note}; fine for a subset, otherwise '
                                        f're-extract {name}.tgz')

    def sample_images(self, report: SplitReport, entries: List[dict]) -> None:
        present = [e['img_path'] for e in entries if self.index.has(e['img_path'])][:self.sample]
        for path in present:
            img, problem = self.image(path)
            if img is None:
                self.error(f'image {path!r} cannot be decoded ({problem}); expected an RGB JPEG', [path])
                continue
            report.tasks[_IMAGE].samples.append(SampleCheck(path, f'JPEG -> img {_describe(img)}'))
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                self.error(f'image {path!r} decodes to {img.shape} {img.dtype}; expected HxWx3 uint8', [path])

    def sample_task(self, report: SplitReport, task: str, entries: List[dict], files: List[List[str]]) -> None:
        """Decode up to ``sample`` entries per distinct set of source folders (e.g. VOC12 and Context semseg)."""
        taken: Counter = Counter()
        loader = LoadMultiTaskAnnotations(tasks=[task])
        for entry, paths in zip(entries, files):
            kind = tuple(osp.dirname(p) for p in paths)
            if taken[kind] >= self.sample or not all(self.index.has(p) for p in paths + [entry['img_path']]):
                continue
            img, _ = self.image(entry['img_path'])
            if img is not None:  # an undecodable image is reported with the images
                taken[kind] += 1
                report.tasks[task].samples.extend(self.decode(task, entry, paths, img, loader))

    def decode(self, task: str, entry: dict, paths: List[str], img: np.ndarray,
               loader: LoadMultiTaskAnnotations) -> List[SampleCheck]:
        """One sample of ``task``: the raw files, then the loader's target checked against the image."""
        raws = []
        for path in paths:
            try:
                raw, shape = _raw(path)
            except Exception as exc:
                self.error(f'{task}: {path!r} cannot be read ({type(exc).__name__}: {exc})', [path])
                return []
            raws.append(raw)
            if shape[:2] and shape[:2] != img.shape[:2]:
                self.report.warnings.append(f'{path}: {shape[:2]} differs from the image {img.shape[:2]}; the '
                                            'loader resizes it (nearest, cubic for normals) with a warning')
        gt_key = TASKS[task].gt_key
        try:
            target = np.asarray(loader(dict(entry, img=img, img_shape=img.shape[:2]))[gt_key])
        except Exception as exc:
            self.error(f'{task}: the loader cannot decode {paths} ({type(exc).__name__}: {exc})', paths)
            return []
        problems = _check_target(task, target, self.report.dataset, tuple(img.shape[:2]))
        if problems:
            self.error(f'{task}: {paths} decode to {gt_key} {_describe(target)}: ' + '; '.join(problems), paths)
        if task == 'depth' and target.max(initial=0) > _DEPTH_WARN_MAX:
            self.report.warnings.append(f'{paths[0]}: depth up to {target.max():.4g}; expected metres (NYUD-v2 '
                                        'stays below ~10 m): millimetres or another archive?')
        return [SampleCheck(paths[0], ' + '.join(raws), f'{gt_key} {_describe(target)}')]

    def check_parts_cache(self, report: SplitReport, dataset: PascalContextMTLDataset, ids: List[str]) -> None:
        cache = dataset.parts_cache_file
        rel = osp.relpath(cache, self.report.root)
        if not osp.isfile(cache):
            report.notes.append(f'{rel} absent: the has-human-parts flags are computed from the {len(ids)} '
                                'human_parts .mat files when the dataset is built (pass cache_dir= to keep them)')
            return
        try:
            covered = len(set(ids) & set(dataset.read_classes_cache(cache)))
        except Exception as exc:
            self.error(f'{cache!r}: {exc}', [cache])
            return
        report.notes.append(f'{rel} covers {covered}/{len(set(ids))} ids'
                            + ('' if covered == len(set(ids)) else '; the others are read from the .mat files'))


def check_dataset_tree(root: str, dataset: Optional[str] = None, tasks: Optional[Sequence[str]] = None,
                       splits: Optional[Sequence[str]] = None, sample: int = 1,
                       expected_counts: Optional[Dict[str, int]] = None, max_listed: int = 5,
                       raise_on_error: bool = True) -> TreeReport:
    """Check that a PASCAL_MT / NYUD_MT tree holds every file the datasets read, and that they decode.

    Args:
        root: The ``PASCAL_MT/`` or ``NYUD_MT/`` directory (a config's ``data_root``).
        dataset: ``'pascal'``, ``'nyud'`` or None to detect it from the directories.
        tasks: Tasks to check; None checks every task the dataset provides.
        splits: Splits to check; None checks those of the full archive (train, val).
        sample: Samples decoded per split, task and kind of source file.
        expected_counts: Split name → expected number of ids; None uses the
            full-archive sizes (:data:`FULL_ARCHIVE_COUNTS`).
        max_listed: Missing paths listed per split and task.
        raise_on_error: Raise :class:`DatasetTreeError` when a file is missing
            or unreadable (else return the report with ``ok`` False).

    Returns:
        The :class:`TreeReport` (``format()`` gives the readable text).

    Raises:
        DatasetTreeError: ``root`` is not a dataset tree of the asked kind,
            or (with ``raise_on_error``) files are missing or unreadable.
        KeyError: A task the dataset does not provide.
    """
    root = osp.abspath(os.fspath(root))
    dataset = detect_dataset(root, dataset)
    cls = DATASET_CLASSES[dataset]
    tasks = cls.AVAILABLE_TASKS if tasks is None else cls.resolve_tasks(tasks)
    full = FULL_ARCHIVE_COUNTS[dataset]
    splits = tuple(full) if splits is None else ((splits,) if isinstance(splits, str) else tuple(splits))
    expected_counts = full if expected_counts is None else expected_counts
    report = TreeReport(root, dataset, tuple(tasks))
    checker = _Checker(report, max(1, int(sample)), max_listed)
    for split in splits:
        report.splits.append(checker.check_split(split, tasks, expected_counts.get(split)))
    if not report.ok and raise_on_error:
        raise DatasetTreeError(report.error_message(), report.error_paths, report)
    return report
