"""On-disk cache of decoded splits, so decoding (seconds to minutes) happens once.

A cache entry is one uncompressed ``.npz`` (CIFAR-10 train: ~150 MB, loads in well
under a second) named by a hash of everything that determines its content: the
source, the split spec, the resize option and the list of input files with
their sizes and modification times. Editing, adding or removing an input file
therefore yields a new key instead of stale data.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ghostnet_jax.data.arrays import ArraySplit

# Bump when the decoding semantics change, so old entries are not reused.
_FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    return Path(
        os.environ.get('GHOSTNET_JAX_CACHE') or Path.home() / '.cache' / 'ghostnet_jax' / 'data'
    )


def file_fingerprints(paths: Iterable[str | os.PathLike]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of each file: cheap to compute, changes when a file does."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((os.fspath(p), st.st_size, st.st_mtime_ns))
    return out


def cache_key(**parts) -> str:
    payload = json.dumps({'format': _FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def load(cache_dir: Path, key: str) -> ArraySplit | None:
    path = Path(cache_dir) / f'{key}.npz'
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return ArraySplit(
                images=z['images'],
                labels=z['labels'],
                class_names=tuple(str(c) for c in z['class_names']),
                name=str(z['name']),
            )
    except (OSError, ValueError, KeyError):
        # A truncated or foreign file is treated as a miss and overwritten later.
        return None


def save(cache_dir: Path, key: str, split: ArraySplit) -> Path:
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f'{key}.npz'
    # Write to a temp file and rename, so a concurrent reader or a killed writer
    # never leaves a half-written entry under the final name.
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix='.npz.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            np.savez(
                f,
                images=split.images,
                labels=split.labels,
                class_names=np.asarray(split.class_names, dtype=str),
                name=np.asarray(split.name),
            )
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
