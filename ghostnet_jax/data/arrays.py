"""The host-side decoded split and its statistics."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """A decoded split held in host memory.

    Attributes:
      images: (N, H, W, C) uint8.
      labels: (N,) int32 class ids, indices into ``class_names``.
      class_names: names of all classes of the dataset (not only those present).
      name: human-readable origin, e.g. ``"folder:/x train[:90%]"``.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(
                f'images must be (N, H, W, C) uint8, got {self.images.shape} {self.images.dtype}'
            )
        if self.labels.shape != (self.images.shape[0],) or self.labels.dtype != np.int32:
            raise ValueError(
                f'labels must be ({self.images.shape[0]},) int32, got {self.labels.shape} {self.labels.dtype}'
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def channel_stats(split: ArraySplit, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of the images, in [0, 255] units, float32.

    Accumulates in float64 over chunks so CIFAR-sized splits neither lose precision
    nor need a full float64 copy (1.2 GB for CIFAR-10).
    """
    if len(split) == 0:
        raise ValueError(f'Cannot compute channel statistics of the empty split {split.name}.')
    channels = split.images.shape[-1]
    total = np.zeros(channels, np.float64)
    total_sq = np.zeros(channels, np.float64)
    for i in range(0, len(split), chunk):
        x = split.images[i : i + chunk].reshape(-1, channels).astype(np.float64)
        total += x.sum(0)
        total_sq += np.square(x).sum(0)
    count = split.images.size // channels
    mean = total / count
    var = np.maximum(total_sq / count - np.square(mean), 0.0)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)
