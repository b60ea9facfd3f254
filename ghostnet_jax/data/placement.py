"""The rows of a split that this process's devices hold: decoded once, placed on them.

A device array of a split is described by ``row_numbers``: the global row stored at
each position of the array's leading (example) dims, rows ``>= len(split)`` being
zero padding. The sharding says which positions each device holds, hence which
rows a process needs; only those are read (``split.read_rows``), so in a
multi-process run no process decodes the whole split. With one process, every
row is needed and the arrays are the same as placing the full split.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import numpy as np
from jax.sharding import Sharding

from ghostnet_jax.data.arrays import ArraySplit, ChannelSums, channel_sums, stats_from_sums
from ghostnet_jax.data.sliced import LazySplit, to_ranges

_LIMB_BITS = 16  # int64 sums travel as 16-bit limbs in int32: exact without jax x64.


def _key(index: tuple) -> tuple:
    return tuple((s.start, s.stop, s.step) for s in index)  # slices are unhashable in 3.11


class LocalRows:
    """Rows of ``split`` held by ``devices`` (default: this process's) under ``sharding``.

    ``devices`` lets tests pose as one process of a multi-host run on a single host.
    """

    def __init__(
        self,
        split: ArraySplit | LazySplit,
        sharding: Sharding,
        row_numbers: np.ndarray,
        devices: Iterable[jax.Device] | None = None,
    ):
        self.num_examples = len(split)
        self.image_shape = tuple(split.image_shape)
        self.sharding, self.row_numbers = sharding, np.asarray(row_numbers, np.int64)
        self.devices = set(sharding.addressable_devices if devices is None else devices)
        self._index_map = sharding.devices_indices_map(self.row_numbers.shape)
        held = [
            self.row_numbers[i].ravel() for d, i in self._index_map.items() if d in self.devices
        ]
        rows = np.unique(np.concatenate(held or [np.zeros(0, np.int64)]))
        self.rows = rows[rows < self.num_examples]  # sorted: local position = searchsorted
        self.split = split.read_rows(to_ranges(self.rows))

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of global ``rows`` (any shape; padding rows are zeros)."""
        images = np.zeros(rows.shape + self.image_shape, np.uint8)
        labels = np.zeros(rows.shape, np.int32)
        real = rows < self.num_examples
        pos = np.searchsorted(self.rows, rows[real])
        if pos.size and (
            not self.rows.size
            or not np.array_equal(self.rows[np.minimum(pos, self.rows.size - 1)], rows[real])
        ):
            raise ValueError('asked for rows that these devices do not hold')
        images[real] = self.split.images[pos]
        labels[real] = self.split.labels[pos]
        return images, labels

    def put(self) -> tuple[jax.Array, jax.Array]:
        """(images, labels) as global arrays with ``sharding`` on the example dims; each
        process fills only its addressable shards, from its local rows."""
        nd = self.row_numbers.ndim

        def block(idx, which):
            part = self.take(self.row_numbers[tuple(idx[:nd])])[which]
            return part[(slice(None),) * nd + tuple(idx[nd:])]

        shape = self.row_numbers.shape
        images = jax.make_array_from_callback(
            shape + self.image_shape, self.sharding, lambda idx: block(idx, 0)
        )
        labels = jax.make_array_from_callback(shape, self.sharding, lambda idx: block(idx, 1))
        return images, labels

    def owned_sums(self) -> ChannelSums:
        """``ChannelSums`` over the real rows these devices own. A row held by several
        devices (replication) is owned by the first of them, so owners are disjoint and
        the pieces of all processes add up to the whole split."""
        seen, owned = set(), []
        for device, index in self._index_map.items():  # the same order on every process
            if _key(index) in seen:
                continue
            seen.add(_key(index))
            if device in self.devices:
                owned.append(self.row_numbers[index].ravel())
        rows = np.unique(np.concatenate(owned or [np.zeros(0, np.int64)]))
        rows = rows[rows < self.num_examples]
        if rows.size == self.rows.size:  # The usual case: no copy of the local images.
            return channel_sums(self.split.images)
        return channel_sums(self.split.images[np.searchsorted(self.rows, rows)])


def _to_limbs(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.int64)[..., None] >> (_LIMB_BITS * np.arange(4))
    return (v & ((1 << _LIMB_BITS) - 1)).astype(np.int32)


def _from_limbs(limbs: np.ndarray) -> np.ndarray:
    return (limbs.astype(np.int64) << (_LIMB_BITS * np.arange(4))).sum(-1)


def global_channel_stats(local: ChannelSums) -> tuple[np.ndarray, np.ndarray]:
    """Mean/std over the pieces of every process, identical on all of them. With one
    process this equals ``channel_stats`` of the split exactly."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        c = local.total.size
        packed = _to_limbs(np.concatenate([local.total, local.total_sq, [local.count]]))
        every = _from_limbs(np.asarray(multihost_utils.process_allgather(packed))).sum(0)
        local = ChannelSums(every[:c], every[c : 2 * c], int(every[-1]))
    return stats_from_sums(local)
