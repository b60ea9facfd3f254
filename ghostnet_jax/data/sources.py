"""The ``source`` string (``tfds:NAME`` / ``folder:PATH``) and the arguments every split reader
checks."""

from __future__ import annotations

import os
from pathlib import Path

from ghostnet_jax.data import cache as cache_lib
from ghostnet_jax.data.errors import UnknownSourceError


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
