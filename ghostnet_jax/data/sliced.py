"""``open_lazy_split``: a split's size, classes and row order without decoding it.

This is the one path by which every split is read. A ``LazySplit`` knows the global
size and order of a split from cheap metadata (folder: the interleaved, sliced file
list; tfds: ``len`` of the random-access data source) and decodes only requested
row ranges, each set of ranges cached under its own key. In a multi-process run each
process reads only the rows its own devices hold (see ``placement.LocalRows``);
``load_split`` (eager loading) is ``open_lazy_split(...).read_all()``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ghostnet_jax.data import cache as cache_lib
from ghostnet_jax.data import folder_source, tfds_source
from ghostnet_jax.data import images as images_lib
from ghostnet_jax.data.arrays import ArraySplit
from ghostnet_jax.data.errors import CorruptImageError, MixedImageSizeError
from ghostnet_jax.data.rows import FolderRows, Rows, TfdsRows
from ghostnet_jax.data.sources import resolve_arguments

log = logging.getLogger(__name__)

Ranges = tuple[tuple[int, int], ...]


def to_ranges(rows: np.ndarray) -> Ranges:
    """Sorted unique row numbers -> maximal ``[start, stop)`` runs (few keys, few slices)."""
    rows = np.asarray(rows, np.int64)
    if rows.size == 0:
        return ()
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [rows.size]])
    return tuple((int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops))


def _indices(ranges: Ranges) -> np.ndarray:
    return np.concatenate([np.arange(a, b) for a, b in ranges] or [np.zeros(0, np.int64)])


class LazySplit:
    """A split that decodes only the rows asked for (same interface as ``ArraySplit``).

    ``image_shape`` is given, or a zero-argument function that finds it (by decoding row
    0) on first use; a read of rows starting at row 0 that comes first provides it too, so
    reading the whole split decodes every row exactly once.
    """

    def __init__(
        self,
        name: str,
        num_examples: int,
        class_names: Sequence[str],
        image_shape: tuple[int, ...] | Callable[[], tuple[int, ...]] | None,
        _decode: Callable[[Ranges], ArraySplit],
        rows: Rows | None = None,
    ):
        self.name = name
        self.rows = rows  # single undecoded rows, for the streamed pipeline
        self.num_examples = num_examples
        self.class_names = tuple(class_names)
        self._decode = _decode
        self._first_shape = image_shape if callable(image_shape) else None
        self._image_shape: tuple[int, ...] | None = (
            None if callable(image_shape) or image_shape is None else tuple(image_shape)
        )
        if not num_examples:
            self._image_shape = (0, 0, 3)

    def __repr__(self) -> str:
        return f'LazySplit({self.name!r}, num_examples={self.num_examples})'

    def __len__(self) -> int:
        return self.num_examples

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(H, W, C) of row 0; every process sizes the global arrays from it."""
        if self._image_shape is None:
            self._image_shape = tuple(int(d) for d in self._first_shape())
        return self._image_shape

    def read_all(self) -> ArraySplit:
        """Every row, decoded (eager loading)."""
        return self.read_rows([(0, self.num_examples)])

    def read_rows(self, ranges: Sequence[tuple[int, int]]) -> ArraySplit:
        """Decoded rows of the sorted, disjoint ``[start, stop)`` ranges, concatenated."""
        ranges = tuple((int(a), int(b)) for a, b in ranges if b > a)
        if any(a < 0 or b > self.num_examples for a, b in ranges):
            raise IndexError(f'rows {ranges} out of range for {self.name} ({self.num_examples}).')
        if not ranges:  # A process may hold only padding rows: nothing to decode.
            return ArraySplit(
                np.zeros((0,) + self.image_shape, np.uint8),
                np.zeros(0, np.int32),
                self.class_names,
                self.name,
            )
        split = self._decode(ranges)
        if self._image_shape is None and ranges[0][0] == 0:
            self._image_shape = split.image_shape  # Row 0 was just decoded: no second decode.
        if split.image_shape != self.image_shape:
            # Other processes size their arrays from row 0: a different local size would not fit.
            raise MixedImageSizeError(
                f'{self.name}: images have different sizes, e.g. row 0 is {self.image_shape} but '
                f'rows {ranges[:3]}... are {split.image_shape} (H, W, C). Pass image_size=... to '
                'resize all images to a square size.'
            )
        return split


def _cached(
    cache_dir: Path,
    key_parts: dict | None,
    name: str,
    n: int,
    decode: Callable[[np.ndarray, str], ArraySplit],
) -> Callable[[Ranges], ArraySplit]:
    """Wraps ``decode(indices, name)`` with a cache keyed by the split and the row ranges."""

    def read(ranges: Ranges) -> ArraySplit:
        rows = _indices(ranges)
        whole = ranges == ((0, n),)
        slice_name = (
            name
            if whole
            else (f'{name} rows {ranges[0][0]}..{ranges[-1][1]} ({len(ranges)} ranges)')
        )
        key = cache_lib.cache_key(**key_parts, rows=ranges) if key_parts is not None else None
        split = cache_lib.load(cache_dir, key, rows.size) if key is not None else None
        how = 'from cache'
        if split is None:
            split = decode(rows, slice_name)
            how = 'decoded'
            if key is not None:
                cache_lib.save(cache_dir, key, split)
        # Shows (and tests check) that a process of a multi-host run touched only its rows.
        log.info('%s: this process reads %d of %d rows (%s)', name, rows.size, n, how)
        return split

    return read


def _without(key_parts: dict, skipped: Sequence[str]) -> dict:
    """Key parts of a split whose rows leave out ``skipped`` files (unchanged if none are)."""
    return {**key_parts, 'skipped': sorted(skipped)} if skipped else key_parts


def _skip_unreadable(
    plan: folder_source.FolderPlan,
    name: str,
    cache_dir: Path,
    key_parts: dict,
    image_size: int | None,
    num_threads: int | None,
    keep_decoded: bool = True,
) -> tuple[folder_source.FolderPlan, list[str]]:
    """The plan without its unreadable files, which are logged by name with their count.

    Finding them means decoding every planned file once; the list is cached (keyed by the
    files' fingerprints) so later runs and the other processes of a pod do not decode
    again, and the decoded images are saved as the whole split's cache entry, so eager
    loading right after this reads them from the cache instead of decoding twice (unless
    not ``keep_decoded``: a streamed split is never held whole, so its scan keeps nothing).
    """
    list_key = cache_lib.cache_key(**key_parts, unreadable=True)
    list_path = cache_dir / f'{list_key}.json'
    skipped: list[str] | None = None
    try:
        skipped = json.loads(list_path.read_text())['unreadable']
    except (OSError, ValueError, KeyError, TypeError):
        pass  # No list yet (or a damaged one): scan the files.
    if skipped is None:
        if keep_decoded:
            readable, images, skipped = folder_source.decode_readable(plan, image_size, num_threads)
            whole = ArraySplit(
                images_lib.stack(images, readable.files, context=name),
                readable.labels,
                readable.class_names,
                name,
            )
            if len(whole):
                cache_lib.save(
                    cache_dir,
                    cache_lib.cache_key(**_without(key_parts, skipped), rows=((0, len(whole)),)),
                    whole,
                )
        else:
            skipped = folder_source.unreadable_files(plan, num_threads)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = list_path.with_suffix(f'.{os.getpid()}.tmp')
        tmp.write_text(json.dumps({'unreadable': skipped}))
        os.replace(tmp, list_path)  # Whole or absent, like the .npz entries.
    if skipped and len(skipped) == len(plan.files):
        # Skipping everything would only fail later, as an empty split, far from the cause.
        raise CorruptImageError(
            f'{name}: none of its {len(skipped)} files can be decoded as an '
            f'image (e.g. {skipped[0]}); check the folder.'
        )
    if skipped:
        log.warning(
            '%s: skipped %d unreadable image file(s) (data.skip_corrupt_images=True): %s',
            name,
            len(skipped),
            ', '.join(skipped),
        )
    bad = set(skipped)
    return folder_source.subset(
        plan, [i for i, f in enumerate(plan.files) if f not in bad]
    ), skipped


def open_lazy_split(
    source: str,
    split: str,
    *,
    data_dir: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    download: bool = True,
    download_timeout: float = 10.0,
    num_threads: int | None = None,
    skip_corrupt_images: bool = False,
    streamed: bool = False,
) -> LazySplit:
    """Like ``load_split`` (same arguments), but decodes nothing until rows (or the image
    shape) are asked for; ``.rows`` reads single examples (the streamed pipeline).

    With ``skip_corrupt_images`` (folder sources), every selected file is decoded once
    here, because the split's size must be known, and equal on every process, before
    any rows are placed. ``streamed``: the split will be read row by row, never whole, so
    that scan keeps no decoded image (host memory stays bounded).
    """
    kind, arg, cache_dir = resolve_arguments(source, image_size, cache_dir)

    if kind == 'folder':
        root = os.path.abspath(os.path.expanduser(arg))
        name = f'folder:{root} {split}'
        plan = folder_source.plan(root, split)
        key_parts = dict(
            source=f'folder:{root}',
            split=split,
            image_size=image_size,
            files=cache_lib.file_fingerprints(plan.files),
            class_names=plan.class_names,
        )
        if skip_corrupt_images:
            plan, skipped = _skip_unreadable(
                plan, name, cache_dir, key_parts, image_size, num_threads, keep_decoded=not streamed
            )
            # The rows are now those of the readable files: key the entries by what was left out.
            key_parts = _without(key_parts, skipped)

        def decode(rows: np.ndarray, slice_name: str) -> ArraySplit:
            return folder_source.decode(
                folder_source.subset(plan, rows), slice_name, image_size, num_threads
            )

        n, class_names = len(plan.files), plan.class_names
        first = (lambda: images_lib.decode_file(plan.files[0], image_size).shape) if n else None
        rows = FolderRows(plan.files, plan.labels)
    else:
        name = f'tfds:{arg} {split}'
        handle = tfds_source.open_split(
            arg, split, data_dir, download=download, download_timeout=download_timeout
        )
        key_parts = None  # No files (e.g. under tfds.testing.mock_data): nothing to key on.
        if handle.files:
            key_parts = dict(
                source=f'tfds:{arg}',
                split=split,
                image_size=image_size,
                version=handle.version,
                data_dir=handle.data_dir,
                files=cache_lib.file_fingerprints(handle.files),
            )

        def decode(rows: np.ndarray, slice_name: str) -> ArraySplit:
            return tfds_source.read(handle, slice_name, image_size, indices=[int(i) for i in rows])

        n, class_names = len(handle.source), handle.class_names
        first = (
            (lambda: tfds_source.read(handle, name, image_size, indices=[0]).image_shape)
            if n
            else None
        )
        rows = TfdsRows(handle.source, name)

    return LazySplit(
        name, n, class_names, first, _cached(cache_dir, key_parts, name, n, decode), rows
    )
