"""Reader for ``folder:PATH`` sources: ``PATH/<split>/<class_name>/*.{jpg,jpeg,png}``.

This is the layout of ``tfds.folder_dataset.ImageFolder`` (which itself needs
TensorFlow, hence this reader). Label ids are the positions of the class names
in the sorted union of class folders over all splits, so ``train`` and ``test``
agree on ids even if one split lacks a class.

Split slicing is applied to each class separately, on its files sorted by name:
``train[:90%]`` takes the first 90% (TFDS rounding) of every class and
``train[90%:]`` the rest, so the two are stratified, deterministic and disjoint.
Note that absolute slices are per class too: ``train[:100]`` is the first 100
files of every class.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from pathlib import Path

import numpy as np

from ghostnet_jax.data import images as images_lib
from ghostnet_jax.data import splits as splits_lib
from ghostnet_jax.data.arrays import ArraySplit
from ghostnet_jax.data.errors import DataError, EmptyClassError, SplitNotFoundError

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
                f'Split folder {root / name} not found (split spec {spec!r}); the splits under {root} '
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
            f'No class folders under {root}/<split>/; expected {root}/<split>/<class_name>/*.jpg|png.'
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

    files: list[str] = []
    labels: list[int] = []
    for label, c in enumerate(class_names):
        sizes = {s: len(per_split[s].get(c, [])) for s in wanted}
        for split_name, start, stop in splits_lib.absolute_ranges(spec, sizes):
            selected = per_split[split_name].get(c, [])[start:stop]
            files.extend(selected)
            labels.extend([label] * len(selected))
    return FolderPlan(tuple(files), np.asarray(labels, np.int32), tuple(class_names))


def decode(
    plan_: FolderPlan, name: str, image_size: int | None = None, num_threads: int | None = None
) -> ArraySplit:
    """Decodes the planned files with PIL in a thread pool (PIL releases the GIL while decoding)."""
    workers = num_threads or min(32, 2 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        decoded = list(pool.map(lambda f: images_lib.decode_file(f, image_size), plan_.files))
    array = images_lib.stack(decoded, plan_.files, context=name)
    return ArraySplit(images=array, labels=plan_.labels, class_names=plan_.class_names, name=name)
