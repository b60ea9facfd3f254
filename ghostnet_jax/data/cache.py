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
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ghostnet_jax.data.arrays import ArraySplit

log = logging.getLogger(__name__)

# Bump when the decoding semantics change, so old entries are not reused.
# 2: folder examples are interleaved over classes; every entry is keyed by its row ranges.
_FORMAT_VERSION = 2


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


def load(cache_dir: Path, key: str, num_examples: int | None = None) -> ArraySplit | None:
    """The cached split under ``key``, or None when there is none or it is unusable.

    An entry that cannot be read back whole (a truncated copy, a full disk during an
    older save, a file from something else) is a cache miss, never a crash: it is
    removed with a warning and the caller decodes and saves it again. ``num_examples``,
    when given, is checked too, so an entry with the wrong number of rows is rebuilt.
    """
    path = Path(cache_dir) / f'{key}.npz'
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            split = ArraySplit(
                images=z['images'],
                labels=z['labels'],
                class_names=tuple(str(c) for c in z['class_names']),
                name=str(z['name']),
            )
        if num_examples is not None and len(split) != num_examples:
            raise ValueError(f'{len(split)} rows cached, {num_examples} expected')
        return split
    # A damaged zip shows up as BadZipFile, EOFError, zlib.error, OSError, ValueError or
    # KeyError depending on where it was cut: all mean "rebuild this entry".
    except Exception as e:
        log.warning(
            'Decode cache entry %s is unreadable (%s: %s); removing it and decoding '
            'the split again.',
            path,
            type(e).__name__,
            e,
        )
        try:
            path.unlink()
        except OSError:
            pass  # Read-only or already replaced by a concurrent writer: save() overwrites it.
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
