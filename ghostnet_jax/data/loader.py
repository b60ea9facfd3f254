"""``load_split``: source string + split spec -> decoded host arrays, via the cache."""

from __future__ import annotations

import os
from pathlib import Path

from ghostnet_jax.data import cache as cache_lib
from ghostnet_jax.data import folder_source, tfds_source
from ghostnet_jax.data.arrays import ArraySplit
from ghostnet_jax.data.errors import UnknownSourceError

DEFAULT_SOURCE = 'tfds:cifar10'
DEFAULT_TRAIN_SPLIT = 'train[:90%]'
DEFAULT_VALIDATION_SPLIT = 'train[90%:]'
DEFAULT_TEST_SPLIT = 'test'


def parse_source(source: str) -> tuple[str, str]:
    """``'tfds:cifar10'`` -> ``('tfds', 'cifar10')``; ``'folder:/x'`` -> ``('folder', '/x')``."""
    kind, sep, arg = source.partition(':')
    if not sep or kind not in ('tfds', 'folder') or not arg:
        raise UnknownSourceError(
            f'Unknown data source {source!r}: use "tfds:NAME" (e.g. tfds:cifar10) or "folder:PATH" '
            '(PATH/<split>/<class_name>/*.jpg|png).'
        )
    return kind, arg


def resolve_arguments(
    source: str, image_size: int | None, cache_dir: str | os.PathLike | None
) -> tuple[str, str, Path]:
    """Checks the arguments every split reader shares: (kind, argument, cache folder)."""
    kind, arg = parse_source(source)
    if image_size is not None and image_size <= 0:
        raise ValueError(f'image_size must be positive, got {image_size}.')
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_lib.default_cache_dir()
    return kind, arg, cache_dir


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
) -> ArraySplit:
    """Loads one split as (N, H, W, C) uint8 images and int32 labels.

    Args:
      source: ``'tfds:NAME'`` or ``'folder:PATH'``.
      split: TFDS split spec, e.g. ``'train[:90%]'``, ``'train[90%:]'``, ``'test'``.
      data_dir: TFDS data dir (default: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      cache_dir: where decoded splits are cached (default ``$GHOSTNET_JAX_CACHE`` or
        ``~/.cache/ghostnet_jax/data``).
      image_size: if set, every image is resized to ``image_size x image_size``
        (required when a folder mixes image sizes).
      download: allow TFDS to download a dataset that is not prepared locally.
      download_timeout: seconds allowed to reach the download hosts before failing.
      num_threads: decoding threads for folder sources.
    """
    kind, arg, cache_dir = resolve_arguments(source, image_size, cache_dir)

    if kind == 'folder':
        root = os.path.abspath(os.path.expanduser(arg))
        name = f'folder:{root} {split}'
        plan = folder_source.plan(root, split)
        key = cache_lib.cache_key(
            source=f'folder:{root}',
            split=split,
            image_size=image_size,
            files=cache_lib.file_fingerprints(plan.files),
            class_names=plan.class_names,
        )
        cached = cache_lib.load(cache_dir, key)
        if cached is not None:
            return cached
        result = folder_source.decode(plan, name, image_size, num_threads)
        cache_lib.save(cache_dir, key, result)
        return result

    name = f'tfds:{arg} {split}'
    handle = tfds_source.open_split(
        arg, split, data_dir, download=download, download_timeout=download_timeout
    )
    key = None
    if (
        handle.files
    ):  # No files (e.g. under tfds.testing.mock_data): nothing to key on, don't cache.
        key = cache_lib.cache_key(
            source=f'tfds:{arg}',
            split=split,
            image_size=image_size,
            version=handle.version,
            data_dir=handle.data_dir,
            files=cache_lib.file_fingerprints(handle.files),
        )
        cached = cache_lib.load(cache_dir, key)
        if cached is not None:
            return cached
    result = tfds_source.read(handle, name, image_size)
    if key is not None:
        cache_lib.save(cache_dir, key, result)
    return result
