"""``open_lazy_split``: a split's size, classes and row order without decoding it.

In a multi-process run each process only needs the rows its own devices hold
(see ``placement.LocalRows``). A ``LazySplit`` knows the global size and order of
a split from cheap metadata (folder: the sliced per-class file list; tfds:
``len`` of the random-access data source) and decodes only requested row
ranges, each set of ranges cached under its own key.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ghostnet_jax.data import cache as cache_lib
from ghostnet_jax.data import folder_source, tfds_source
from ghostnet_jax.data import images as images_lib
from ghostnet_jax.data.arrays import ArraySplit
from ghostnet_jax.data.errors import MixedImageSizeError
from ghostnet_jax.data.loader import resolve_arguments

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


@dataclasses.dataclass(frozen=True)
class LazySplit:
    """A split that decodes only the rows asked for (same interface as ``ArraySplit``)."""

    name: str
    num_examples: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, ...]
    # Decodes the given row indices (sorted) into an ArraySplit; may cache.
    _decode: Callable[[Ranges], ArraySplit] = dataclasses.field(repr=False, compare=False)

    def __len__(self) -> int:
        return self.num_examples

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def read_rows(self, ranges: Sequence[tuple[int, int]]) -> ArraySplit:
        """Decoded rows of the sorted, disjoint ``[start, stop)`` ranges, concatenated."""
        ranges = tuple((int(a), int(b)) for a, b in ranges if b > a)
        if any(a < 0 or b > self.num_examples for a, b in ranges):
            raise IndexError(f'rows {ranges} out of range for {self.name} ({self.num_examples}).')
        if not ranges:  # A process may hold only padding rows: nothing to decode.
            return ArraySplit(np.zeros((0,) + self.image_shape, np.uint8), np.zeros(0, np.int32),
                              self.class_names, self.name)
        split = self._decode(ranges)
        if split.image_shape != self.image_shape:
            # Other processes size their arrays from row 0: a different local size would not fit.
            raise MixedImageSizeError(
                f'{self.name}: images have different sizes, e.g. row 0 is {self.image_shape} but '
                f'rows {ranges[:3]}... are {split.image_shape} (H, W, C). Pass image_size=... to '
                'resize all images to a square size.')
        return split


def _cached(cache_dir: Path, key_parts: dict | None, name: str, n: int,
            decode: Callable[[np.ndarray, str], ArraySplit]) -> Callable[[Ranges], ArraySplit]:
    """Wraps ``decode(indices, name)`` with a cache keyed by the split and the row ranges."""

    def read(ranges: Ranges) -> ArraySplit:
        rows = _indices(ranges)
        slice_name = f'{name} rows {ranges[0][0]}..{ranges[-1][1]} ({len(ranges)} ranges)'
        key = cache_lib.cache_key(**key_parts, rows=ranges) if key_parts is not None else None
        split = cache_lib.load(cache_dir, key) if key is not None else None
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
) -> LazySplit:
    """Like ``load_split`` (same arguments), but decodes nothing except row 0 (for the shape)."""
    kind, arg, cache_dir = resolve_arguments(source, image_size, cache_dir)

    if kind == 'folder':
        root = os.path.abspath(os.path.expanduser(arg))
        name = f'folder:{root} {split}'
        plan = folder_source.plan(root, split)
        key_parts = dict(source=f'folder:{root}', split=split, image_size=image_size,
                         files=cache_lib.file_fingerprints(plan.files),
                         class_names=plan.class_names)

        def decode(rows: np.ndarray, slice_name: str) -> ArraySplit:
            sub = folder_source.FolderPlan(tuple(plan.files[i] for i in rows), plan.labels[rows],
                                           plan.class_names)
            return folder_source.decode(sub, slice_name, image_size, num_threads)

        n, class_names = len(plan.files), plan.class_names
        first = (lambda: images_lib.decode_file(plan.files[0], image_size)) if n else None
    else:
        name = f'tfds:{arg} {split}'
        handle = tfds_source.open_split(arg, split, data_dir, download=download,
                                        download_timeout=download_timeout)
        key_parts = None  # No files (e.g. under tfds.testing.mock_data): nothing to key on.
        if handle.files:
            key_parts = dict(source=f'tfds:{arg}', split=split, image_size=image_size,
                             version=handle.version, data_dir=handle.data_dir,
                             files=cache_lib.file_fingerprints(handle.files))

        def decode(rows: np.ndarray, slice_name: str) -> ArraySplit:
            return tfds_source.read(handle, slice_name, image_size, indices=[int(i) for i in rows])

        n, class_names = len(handle.source), handle.class_names
        first = (lambda: tfds_source.read(handle, name, image_size, indices=[0]).images[0]) if n else None

    # Every process must size the global arrays identically before decoding its own rows.
    image_shape = tuple(int(d) for d in first().shape) if first else (0, 0, 3)
    return LazySplit(name, n, tuple(class_names), image_shape,
                     _cached(cache_dir, key_parts, name, n, decode))
