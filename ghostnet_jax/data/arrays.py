"""The host-side decoded split and its statistics."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

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
                f'labels must be ({self.images.shape[0]},) int32, got {self.labels.shape} '
                f'{self.labels.dtype}'
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(H, W, C) of every image."""
        return tuple(int(d) for d in self.images.shape[1:])

    def read_rows(self, ranges: Sequence[tuple[int, int]]) -> ArraySplit:
        """Rows of the sorted, disjoint ``[start, stop)`` ranges, concatenated.

        The same interface as ``LazySplit.read_rows``, so device placement treats a
        decoded split and a not-yet-decoded one alike; one range is a view (no copy).
        """
        if len(ranges) == 1:
            rows = slice(*ranges[0])
        else:
            rows = np.concatenate([np.arange(a, b) for a, b in ranges] or [np.zeros(0, np.int64)])
        return ArraySplit(self.images[rows], self.labels[rows], self.class_names, self.name)


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


@dataclasses.dataclass(frozen=True)
class ChannelSums:
    """Exact integer per-channel sums of pixel values and their squares, and the pixel count.

    Partial sums over disjoint pieces of a split add up exactly (Python/int64 integers),
    so statistics combined across processes equal ``channel_stats`` of the whole split.
    """

    total: np.ndarray  # (C,) int64
    total_sq: np.ndarray  # (C,) int64
    count: int  # pixels per channel

    def __add__(self, other: ChannelSums) -> ChannelSums:
        return ChannelSums(
            self.total + other.total, self.total_sq + other.total_sq, self.count + other.count
        )


def channel_sums(images: np.ndarray, chunk: int = 4096) -> ChannelSums:
    """``ChannelSums`` of (N, H, W, C) uint8 images, in chunks to bound the int64 copy."""
    channels = images.shape[-1]
    total = np.zeros(channels, np.int64)
    total_sq = np.zeros(channels, np.int64)
    for i in range(0, images.shape[0], chunk):
        x = images[i : i + chunk].reshape(-1, channels).astype(np.int64)
        total += x.sum(0)
        total_sq += np.square(x).sum(0)
    return ChannelSums(total, total_sq, images.size // channels if channels else 0)


def stats_from_sums(sums: ChannelSums) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std as ``channel_stats`` computes them (float64, then float32)."""
    if sums.count == 0:
        raise ValueError('Cannot compute channel statistics of an empty split.')
    # Integer sums below 2**53 convert to float64 exactly, so this matches channel_stats
    # (whose float64 chunk sums of integers are exact too) bit for bit.
    mean = sums.total.astype(np.float64) / sums.count
    var = np.maximum(sums.total_sq.astype(np.float64) / sums.count - np.square(mean), 0.0)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)
