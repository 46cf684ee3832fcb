"""Errors of one sample that name its file, its index and its split; no silent skipping.

mmcv's ``LoadImageFromFile`` reports an undecodable image with a bare
``AssertionError: failed to load image: <path>`` (``cv2.imdecode`` returned
None) or a ``cv2.error``, without the sample's index; with
``ignore_empty=True`` it returns None instead, and mmengine's
``BaseDataset.__getitem__`` then draws another index in training mode, so the
broken image is skipped without a word. :class:`SampleErrorsMixin` runs the
pipeline one transform at a time and turns these cases into errors:

* an exception of the image loader (an instance of mmcv's
  ``LoadImageFromFile``) other than ``FileNotFoundError`` becomes a
  :class:`CorruptImageError` naming the file, the index, the image id and the
  split, with the original exception chained;
* a transform returning None raises :class:`SkippedSampleError` (a
  :class:`CorruptImageError` when it is the image loader);
* any other exception (e.g. the ``MalformedFileError`` of
  ``LoadMultiTaskAnnotations``, which names its file) keeps its type and
  message and gets a note with the index, the id and the split.

Truncated JPEGs: OpenCV 5.0 (the version this was written against) returns
None for a JPEG cut anywhere after its header, even one missing only its
end-of-image marker, so a truncated file is reported like a garbage one. An
OpenCV that decodes truncated files partially (grey lower part, a libjpeg
"Premature end of JPEG file" warning, no exception) cannot be caught here.
"""
from typing import Any, Optional

from mmcv.transforms import LoadImageFromFile

from .pascal_parts import MalformedFileError


class CorruptImageError(MalformedFileError):
    """An image file of the dataset cannot be decoded."""


class SkippedSampleError(RuntimeError):
    """A transform returned None, which would make mmengine skip the sample."""


def _is_image_loader(transform: Any) -> bool:
    return isinstance(transform, LoadImageFromFile)


class SampleErrorsMixin:
    """``prepare_data`` that raises, with the sample named, instead of skipping or asserting.

    For subclasses of ``mmengine.dataset.BaseDataset``; reads the optional
    ``split_name`` property for the split's name.
    """

    def describe_sample(self, idx: int, info: Optional[dict] = None) -> str:
        """``"index 3 (id '2008_000003') of split 'train' of PascalContextMTLDataset (<data_root>)"``."""
        info = info or {}
        img_id = f" (id {info['img_id']!r})" if info.get('img_id') is not None else ''
        split = getattr(self, 'split_name', None)
        in_split = f' of split {split!r}' if split else ''
        root = getattr(self, 'data_root', None)
        where = f' ({root})' if root else ''
        return f'index {idx}{img_id}{in_split} of {type(self).__name__}{where}'

    def _corrupt_image(self, idx: int, info: dict, cause: str) -> CorruptImageError:
        path = info.get('img_path', '<no img_path>')
        return CorruptImageError(
            f'{path}: image at {self.describe_sample(idx, info)} cannot be decoded ({cause}); the file is '
            'corrupt or not an image: re-extract it from the dataset archive')

    def prepare_data(self, idx: int) -> Any:
        """Run the pipeline on sample ``idx``; never returns None.

        Raises:
            CorruptImageError: The image loader failed or returned None.
            SkippedSampleError: Another transform returned None.
        """
        info = self.get_data_info(idx)
        sample = {k: info[k] for k in ('img_path', 'img_id') if k in info}
        data = info
        for transform in getattr(self.pipeline, 'transforms', [self.pipeline]):
            try:
                data = transform(data)
            except FileNotFoundError as exc:
                exc.add_note(f'while loading {self.describe_sample(idx, sample)}')
                raise
            except Exception as exc:
                if _is_image_loader(transform) and not isinstance(exc, MalformedFileError):
                    raise self._corrupt_image(idx, sample, f'{type(exc).__name__}: {exc}') from exc
                exc.add_note(f'while loading {self.describe_sample(idx, sample)}')
                raise
            if data is None:
                if _is_image_loader(transform):
                    raise self._corrupt_image(idx, sample, f'{transform!r} returned None')
                raise SkippedSampleError(
                    f'{type(transform).__name__} returned None for {sample.get("img_path")} at '
                    f'{self.describe_sample(idx, sample)}; ditask_mm datasets never skip a sample, fix the '
                    'transform or the file')
        return data
