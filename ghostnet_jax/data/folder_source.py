"""Reader for ``folder:PATH`` sources: ``PATH/<split>/<class_name>/*.{jpg,jpeg,png}``.

This is the layout of ``tfds.folder_dataset.ImageFolder`` (which itself needs
TensorFlow, hence this reader). Label ids are the positions of the class names
in the sorted union of class folders over all splits, so ``train`` and ``test``
agree on ids even if one split lacks a class.

A split spec means what it means for TFDS: ``train[:100]`` is the first 100
examples of ``train``, ``train[:90%]`` the first ``round(0.9 * N)``. For that to be
useful, the examples of a split folder are put in one deterministic order in which
the classes interleave: each class's files sorted by name, the classes merged by
the position of each file within its class, ``(i + 0.5) / n_class`` (ties: sorted
class name first). With equally large classes this is plain round-robin
(c0, c1, c2, c0, c1, c2, ...); with unequal ones every class appears in proportion
to its size. So any slice, absolute or percent, prefix or suffix, holds every class
in (nearly) its share of the split, and ``train[:90%]`` / ``train[90%:]`` are
stratified, deterministic, disjoint and complete.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ghostnet_jax.data import images as images_lib
from ghostnet_jax.data import splits as splits_lib
from ghostnet_jax.data.arrays import ArraySplit
from ghostnet_jax.data.errors import (
    CorruptImageError,
    DataError,
    EmptyClassError,
    SplitNotFoundError,
)

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


@dataclasses.dataclass(frozen=True)
class FolderPlan:
    """The files a split spec selects, before any decoding (cheap: directory listings only)."""

    files: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]


def _list_images(class_dir: Path) -> list[str]:
    return sorted(
        os.path.join(class_dir, f)
        for f in os.listdir(class_dir)
        if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.')
    )


def plan(root: str | os.PathLike, spec: str) -> FolderPlan:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f'folder source {root} does not exist or is not a directory.')
    available = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith('.'))
    wanted = splits_lib.split_names(spec)
    for name in wanted:
        if name not in available:
            raise SplitNotFoundError(
                f'Split folder {root / name} not found (split spec {spec!r}); the splits under '
                f'{root} '
                f'are {available}. Expected layout: {root}/<split>/<class_name>/*.jpg|png.'
            )
    class_names = sorted(
        {
            d.name
            for s in available
            for d in (root / s).iterdir()
            if d.is_dir() and not d.name.startswith('.')
        }
    )
    if not class_names:
        raise DataError(
            f'No class folders under {root}/<split>/; expected '
            f'{root}/<split>/<class_name>/*.jpg|png.'
        )

    # {split: {class: sorted files}} for the splits the spec reads.
    per_split: dict[str, dict[str, list[str]]] = {}
    for name in wanted:
        per_split[name] = {}
        for c in class_names:
            class_dir = root / name / c
            if not class_dir.is_dir():
                continue  # A class missing from this split contributes no examples.
            files = _list_images(class_dir)
            if not files:
                raise EmptyClassError(
                    f'Class folder {class_dir} contains no {"/".join(IMAGE_EXTENSIONS)} images; '
                    'remove it or add images.'
                )
            per_split[name][c] = files

    # Each base split in its one interleaved order; the spec's slices index into that order.
    ordered = {
        name: interleave([per_split[name].get(c, []) for c in class_names]) for name in wanted
    }
    files: list[str] = []
    labels: list[int] = []
    sizes = {name: len(ordered[name]) for name in wanted}
    for split_name, start, stop in splits_lib.absolute_ranges(spec, sizes):
        for label, f in ordered[split_name][start:stop]:
            files.append(f)
            labels.append(label)
    return FolderPlan(tuple(files), np.asarray(labels, np.int32), tuple(class_names))


def interleave(per_class: Sequence[Sequence[str]]) -> list[tuple[int, str]]:
    """``(class index, file)`` of every file, the classes interleaved in proportion to their sizes.

    File ``i`` of a class with ``n`` files sits at ``(i + 0.5) / n`` of the way through
    the split; sorting by that position (then by class index) is round-robin when the
    classes are equally large. Mathematically equal positions are equal floats (IEEE
    division is correctly rounded), so ties break by class index on every machine.
    """
    keyed = [
        ((i + 0.5) / len(files), c, f)
        for c, files in enumerate(per_class)
        for i, f in enumerate(files)
    ]
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [(c, f) for _, c, f in keyed]


def subset(plan_: FolderPlan, rows: Sequence[int] | np.ndarray) -> FolderPlan:
    """The plan of the given rows (in that order)."""
    rows = np.asarray(rows, np.int64)
    return FolderPlan(tuple(plan_.files[i] for i in rows), plan_.labels[rows], plan_.class_names)


def decode_or_none(path: str, image_size: int | None = None) -> np.ndarray | None:
    """The decoded image, or None (with the reason logged) if the file is not a readable image."""
    try:
        return images_lib.decode_file(path, image_size)
    except CorruptImageError as e:
        log.warning('%s', e)
        return None


def decode_readable(
    plan_: FolderPlan, image_size: int | None = None, num_threads: int | None = None
) -> tuple[FolderPlan, list[np.ndarray], list[str]]:
    """Decodes every planned file, leaving out unreadable ones: (readable plan, images, skipped
    files)."""
    workers = num_threads or min(32, 2 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        decoded = list(pool.map(lambda f: decode_or_none(f, image_size), plan_.files))
    keep = [i for i, image in enumerate(decoded) if image is not None]
    skipped = [f for f, image in zip(plan_.files, decoded) if image is None]
    return subset(plan_, keep), [decoded[i] for i in keep], skipped


def unreadable_files(plan_: FolderPlan, num_threads: int | None = None) -> list[str]:
    """The planned files that do not decode, found by decoding each and keeping nothing
    (memory stays bounded however large the split: the streamed pipeline's scan)."""
    workers = num_threads or min(32, 2 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        ok = list(pool.map(lambda f: decode_or_none(f) is not None, plan_.files))
    return [f for f, good in zip(plan_.files, ok) if not good]


def decode(
    plan_: FolderPlan, name: str, image_size: int | None = None, num_threads: int | None = None
) -> ArraySplit:
    """Decodes the planned files with PIL in a thread pool (PIL releases the GIL while decoding)."""
    workers = num_threads or min(32, 2 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        decoded = list(pool.map(lambda f: images_lib.decode_file(f, image_size), plan_.files))
    array = images_lib.stack(decoded, plan_.files, context=name)
    return ArraySplit(images=array, labels=plan_.labels, class_names=plan_.class_names, name=name)
