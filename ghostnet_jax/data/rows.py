"""Single examples of a split by row number, and what the host does to them before
batching: the streamed pipeline's unit of work.

Grain pickles these objects into its worker processes, so they hold only picklable
things (file names, a TFDS ArrayRecord data source) and decode on demand. Row ``r`` is
the same example the device-resident pipeline holds at row ``r`` (``sliced.LazySplit``
orders both), and the ``'resize'`` view decodes it to the same uint8 pixels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np

from ghostnet_jax.data import images as images_lib
from ghostnet_jax.data.errors import CorruptImageError, MixedImageSizeError

VIEWS = ('resize', 'random_resized_crop', 'centre_crop')


class Rows(Protocol):
    """Random access to a split's examples as decoded (H, W, C) uint8 and an int label."""

    def __len__(self) -> int: ...

    def read(self, row: int) -> tuple[np.ndarray, int]: ...

    def describe(self, row: int) -> str: ...


@dataclasses.dataclass(frozen=True)
class FolderRows:
    """Rows of a ``folder:`` split: its planned files (``folder_source.plan``)."""

    files: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.files)

    def read(self, row: int) -> tuple[np.ndarray, int]:
        # CorruptImageError names the file, and pickles: Grain re-raises it from a worker.
        return images_lib.decode_file(self.files[row]), int(self.labels[row])

    def describe(self, row: int) -> str:
        return self.files[row]


@dataclasses.dataclass(frozen=True)
class TfdsRows:
    """Rows of a ``tfds:`` split: its random-access ArrayRecord data source."""

    source: Any
    name: str

    def __len__(self) -> int:
        return len(self.source)

    def read(self, row: int) -> tuple[np.ndarray, int]:
        try:
            example = self.source[row]
        except Exception as e:  # A damaged record fails inside TFDS's decoder, any type.
            raise CorruptImageError(
                f'Cannot decode {self.describe(row)}: {type(e).__name__}: {e}. Prepare the '
                'dataset again (python -m ghostnet_jax.prepare_data).'
            ) from e
        image = np.asarray(example['image'], np.uint8)
        return (image[..., None] if image.ndim == 2 else image), int(example['label'])

    def describe(self, row: int) -> str:
        return f'{self.name} record {row}'


@dataclasses.dataclass(frozen=True)
class View:
    """What the host does to one decoded image before it is batched.

    ``'resize'``: to ``size`` x ``size`` as the device-resident pipeline decodes (PIL
    bilinear), or unchanged for ``size=None``, when every image must already have
    ``shape``, the (H, W, C) of every output;
    ``'random_resized_crop'``: an Inception-style crop resized to ``size`` (training on
    images of any size); ``'centre_crop'``: shorter side to size / crop_pct, centre crop
    (its evaluation, and what ``predict`` does for such a run).
    """

    mode: str
    size: int | None
    shape: tuple[int, ...]
    crop_pct: float = 0.875

    def __post_init__(self):
        if self.mode not in VIEWS:
            raise ValueError(f'view mode must be one of {VIEWS}, got {self.mode!r}.')
        if self.mode != 'resize' and not self.size:
            raise ValueError(f'the {self.mode!r} view needs a size (data.image_size).')

    def apply(self, image: np.ndarray, rng: np.random.Generator | None, what: str) -> np.ndarray:
        if self.mode == 'random_resized_crop':
            return images_lib.random_resized_crop(image, self.size, rng)
        if self.mode == 'centre_crop':
            return images_lib.resize_and_centre_crop(image, self.size, self.crop_pct)
        if self.size:
            return images_lib.resize(image, self.size)
        if image.shape != self.shape:
            raise MixedImageSizeError(
                f"{what} is {image.shape} (H, W, C), but the split's first image is "
                f'{self.shape}: images have different sizes. Set data.image_size to resize '
                'them all to one square size (or data.stream.random_resized_crop=True to crop).'
            )
        return image


@dataclasses.dataclass(frozen=True)
class ReadExample:
    """Grain map: position ``i`` of ``order`` -> that row's example ({'image', 'label',
    'mask'}); row -1 is padding (zeros, mask False). Random crops draw from
    (seed, epoch, row), so a row's crop depends on nothing else (not on workers or
    processes)."""

    rows: Rows
    view: View
    order: np.ndarray
    seed: int = 0
    epoch: int = 0

    def __call__(self, i: int) -> dict[str, np.ndarray]:
        row = int(self.order[i])
        if row < 0:
            return {
                'image': np.zeros(self.view.shape, np.uint8),
                'label': np.int32(0),
                'mask': np.bool_(False),
            }
        image, label = self.rows.read(row)
        rng = (
            np.random.default_rng((self.seed, self.epoch, row))
            if self.view.mode == 'random_resized_crop'
            else None
        )
        image = self.view.apply(image, rng, self.rows.describe(row))
        return {'image': image, 'label': np.int32(label), 'mask': np.bool_(True)}
