"""``load_split``: source string + split spec -> decoded host arrays, via the cache.

Eager loading is lazy loading that reads every row: ``load_split`` opens the split
with ``sliced.open_lazy_split`` and reads ``[0, N)``, so both share one planning,
slicing, caching and error path.
"""

from __future__ import annotations

import os

from ghostnet_jax.data.arrays import ArraySplit
from ghostnet_jax.data.sliced import open_lazy_split
from ghostnet_jax.data.sources import parse_source, resolve_arguments

__all__ = [
    'DEFAULT_SOURCE',
    'DEFAULT_TRAIN_SPLIT',
    'DEFAULT_VALIDATION_SPLIT',
    'DEFAULT_TEST_SPLIT',
    'load_split',
    'parse_source',
    'resolve_arguments',
]

DEFAULT_SOURCE = 'tfds:cifar10'
DEFAULT_TRAIN_SPLIT = 'train[:90%]'
DEFAULT_VALIDATION_SPLIT = 'train[90%:]'
DEFAULT_TEST_SPLIT = 'test'


def load_split(
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
) -> ArraySplit:
    """Loads one split as (N, H, W, C) uint8 images and int32 labels.

    Args:
      source: ``'tfds:NAME'`` or ``'folder:PATH'``.
      split: TFDS split spec, e.g. ``'train[:90%]'``, ``'train[90%:]'``, ``'test'``; the
        same spec selects the same examples for both kinds of source (see ``folder_source``).
      data_dir: TFDS data dir (default: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      cache_dir: where decoded splits are cached (default ``$GHOSTNET_JAX_CACHE`` or
        ``~/.cache/ghostnet_jax/data``).
      image_size: if set, every image is resized to ``image_size x image_size``
        (required when a folder mixes image sizes).
      download: allow TFDS to download a dataset that is not prepared locally.
      download_timeout: seconds allowed to reach the download hosts before failing.
      num_threads: decoding threads for folder sources.
      skip_corrupt_images: folder sources: leave out (and log by name) files that cannot be
        decoded instead of failing with ``CorruptImageError``.
    """
    lazy = open_lazy_split(
        source,
        split,
        data_dir=data_dir,
        cache_dir=cache_dir,
        image_size=image_size,
        download=download,
        download_timeout=download_timeout,
        num_threads=num_threads,
        skip_corrupt_images=skip_corrupt_images,
    )
    return lazy.read_all()
