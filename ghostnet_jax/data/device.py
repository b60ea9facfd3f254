"""Device-resident train and eval data: the accelerator never waits for the host.

The whole uint8 split lives on the devices, sharded along the example axis of a
1-D mesh with axis ``'data'``. Once per epoch one jitted call gathers a global
permutation into ``(steps, B, H, W, C)`` sharded ``P(None, 'data')``; each step
then slices its batch (device-local), augments and normalizes it, all in jit.
In a multi-process run each process reads and transfers only the rows its own
devices hold (``placement.LocalRows``).

Everything random is a pure function of (seed, epoch, step) drawn at global
batch shape, so the batches do not depend on the number of devices, and a run
resumed at (epoch, step) sees exactly what an uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ghostnet_jax.data.arrays import ArraySplit
from ghostnet_jax.data.augment import AugmentConfig, augment_batch, normalize
from ghostnet_jax.data.errors import BatchConfigError
from ghostnet_jax.data.mixing import mix_batch
from ghostnet_jax.data.placement import LocalRows, global_channel_stats
from ghostnet_jax.data.sliced import LazySplit

AXIS = 'data'
_MIX_SALT = 3  # mixing draws from fold_in(step key, 3); augment_batch uses salts 1 and 2.


def check_batch(mesh: Mesh, global_batch_size: int, what: str) -> None:
    if AXIS not in mesh.axis_names:
        raise ValueError(f'The mesh needs an axis named {AXIS!r}, got axes {mesh.axis_names}.')
    n = mesh.shape[AXIS]
    if global_batch_size <= 0 or global_batch_size % n:
        lo = max(n, global_batch_size // n * n)
        raise BatchConfigError(
            f'{what}: global batch size {global_batch_size} does not divide over the {n} devices '
            'of the '
            f"'{AXIS}' mesh axis; use a multiple of {n} (e.g. {lo} or {lo + n})."
        )


def _explicit(mesh: Mesh) -> bool:
    """Whether the 'data' axis is Explicit (``jax.make_mesh``'s default) rather than Auto
    (``Mesh``'s)."""
    return dict(zip(mesh.axis_names, mesh.axis_types))[AXIS] == AxisType.Explicit


def _reshard(x: jax.Array, sharding: NamedSharding) -> jax.Array:
    """Moves ``x`` to ``sharding`` inside jit, for both Explicit and Auto meshes."""
    if _explicit(sharding.mesh):
        return jax.sharding.reshard(x, sharding)
    return jax.lax.with_sharding_constraint(x, sharding)


def _gather_rows(x: jax.Array, idx: jax.Array, sharding: NamedSharding) -> jax.Array:
    """``x[idx]`` with the result placed at ``sharding``."""
    if _explicit(sharding.mesh):
        return x.at[idx].get(out_sharding=sharding)
    return jax.lax.with_sharding_constraint(x[idx], sharding)


@dataclasses.dataclass(frozen=True)
class EpochBatches:
    """One epoch's shuffled examples on device: images (steps, B, H, W, C) uint8, labels (steps,
    B)."""

    epoch: int
    images: jax.Array
    labels: jax.Array
    key: jax.Array  # Augmentation key of this epoch; step k uses fold_in(key, k).

    @property
    def steps(self) -> int:
        return int(self.images.shape[0])

    def state(self) -> None:
        """Nothing to save: the batches are a pure function of (seed, epoch, step)."""
        return None

    def close(self) -> None:
        """Nothing to release (a streamed epoch stops its workers here)."""


def downscale(x: jax.Array, size: int | None) -> jax.Array:
    """(B, H, W, C) float images resized to (B, size, size, C) with antialiasing (a
    triangle filter as wide as the scale), or unchanged for None / the same size."""
    if size is None or x.shape[1:3] == (size, size):
        return x
    return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), 'linear', antialias=True)


def epoch_keys(seed: int, epoch: int | jax.Array) -> tuple[jax.Array, jax.Array]:
    """(permutation key, augmentation key) of an epoch: what makes every pipeline's
    batches a pure function of (seed, epoch, step)."""
    perm_key, aug_key = jax.random.split(jax.random.fold_in(jax.random.key(seed), epoch))
    return perm_key, aug_key


def batch_transform(
    augment: AugmentConfig, mean: np.ndarray, std: np.ndarray, dtype, num_classes: int
) -> Callable[..., dict[str, jax.Array]]:
    """The on-device half of a training batch, shared by the device-resident and the
    streamed pipeline (so both give the same batch from the same uint8 examples):
    ``finish(images, labels, epoch_key, step, size)`` augments (B, H, W, C) uint8 images
    with ``fold_in(epoch_key, step)``, normalizes them, optionally mixes and downscales."""
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    # Cutout fills with the dataset mean so the patch normalizes to ~0.
    fill = np.clip(np.round(mean), 0, 255).astype(np.uint8)

    def finish(images, labels, key, step, size=None):
        step_key = jax.random.fold_in(key, step)
        x = augment_batch(images, step_key, augment, fill)
        if not augment.mixes:
            x = normalize(x, mean, std, jnp.float32 if size else dtype)
            return {'image': downscale(x, size).astype(dtype), 'label': labels}
        # Mixing needs the labels, so it follows normalization (which it commutes
        # with: both are affine); it runs in float32 and 'label' becomes soft targets.
        x, targets = mix_batch(
            normalize(x, mean, std, jnp.float32),
            labels,
            jax.random.fold_in(step_key, _MIX_SALT),
            num_classes,
            augment.mixup_alpha,
            augment.cutmix_alpha,
            augment.mix_prob,
        )
        return {'image': downscale(x, size).astype(dtype), 'label': targets}

    return finish


class DeviceTrainData:
    """Shuffled, augmented training batches from a device-resident split.

    The last partial batch of each epoch is dropped (``steps_per_epoch = N // B``).
    Each process decodes (for a ``LazySplit``) and transfers only the rows its devices
    hold. ``mean``/``std`` default to the split's channel statistics, summed over the
    processes' rows (``self.mean``, ``self.std``).
    """

    def __init__(
        self,
        split: ArraySplit | LazySplit,
        mesh: Mesh,
        global_batch_size: int,
        seed: int,
        augment: AugmentConfig,
        mean=None,
        std=None,
        dtype=jnp.float32,
    ):
        check_batch(mesh, global_batch_size, f'training data {split.name}')
        n = len(split)
        if n < global_batch_size:
            raise BatchConfigError(
                f'training split {split.name} has {n} examples, fewer than one global batch of '
                f'{global_batch_size}; use a smaller batch size or a larger split.'
            )
        self.mesh = mesh
        self.global_batch_size = global_batch_size
        self.num_examples = n
        self.image_shape = tuple(int(d) for d in split.image_shape)
        self.steps_per_epoch = n // global_batch_size
        self.seed = seed
        self.augment = augment
        self.class_names = split.class_names
        devices = mesh.shape[AXIS]
        rows = (
            math.ceil(n / devices) * devices
        )  # Padding rows are never selected by the permutation.
        local = LocalRows(split, NamedSharding(mesh, P(AXIS)), np.arange(rows))
        self._images, self._labels = local.put()
        if mean is None or std is None:
            mean, std = global_channel_stats(local.owned_sums())
        del local  # The host copy of the rows is not needed once they are on the devices.
        self._mean = self.mean = np.asarray(mean, np.float32)
        self._std = self.std = np.asarray(std, np.float32)
        steps, b = self.steps_per_epoch, global_batch_size

        epoch_sharding = NamedSharding(mesh, P(None, AXIS))
        replicated = NamedSharding(mesh, P())

        @functools.partial(jax.jit, out_shardings=(epoch_sharding, epoch_sharding, None))
        def shuffle(images, labels, epoch):
            perm_key, aug_key = epoch_keys(seed, epoch)
            perm = jax.random.permutation(perm_key, n)[: steps * b].reshape(steps, b)
            # Every device needs examples from every shard: gather from a replicated copy
            # (one all-gather per epoch) with indices sharded along B, so each device
            # only materializes its own columns.
            perm = _reshard(perm, epoch_sharding)
            images = _reshard(images, replicated)
            labels = _reshard(labels, replicated)
            x = _gather_rows(images, perm, epoch_sharding)
            y = _gather_rows(labels, perm, epoch_sharding)
            return x, y, aug_key

        finish = batch_transform(augment, self._mean, self._std, dtype, len(split.class_names))

        @functools.partial(
            jax.jit, out_shardings=NamedSharding(mesh, P(AXIS)), static_argnames='size'
        )
        def make_batch(images, labels, key, step, size=None):
            return finish(images[step], labels[step], key, step, size)

        self._shuffle = shuffle
        self._make_batch = make_batch

    def epoch(self, epoch: int, first: int = 0, state: dict | None = None) -> EpochBatches:
        """This epoch's reshuffled batches, materialized on device by one jitted call.
        ``first`` and ``state`` (where a resumed epoch starts, and a streamed pipeline's
        saved iterator) do not matter here: any step can be sliced from the epoch."""
        del first, state
        x, y, key = self._shuffle(self._images, self._labels, jnp.int32(epoch))
        return EpochBatches(epoch, x, y, key)

    def batch(
        self, epoch_batches: EpochBatches, step: int, size: int | None = None
    ) -> dict[str, jax.Array]:
        """Augmented, normalized batch ``step`` of the epoch: image (B, H, W, C) and label,
        (B,) int32, or with mixup/cutmix on (``augment.mixes``) (B, num_classes) float32
        soft targets that sum to one per example. ``size``: the images downscaled to
        size x size after augmentation (config.data.low_res); None keeps H x W."""
        if not 0 <= step < epoch_batches.steps:
            raise IndexError(f'step {step} out of range [0, {epoch_batches.steps}).')
        if size is not None and not 0 < size <= min(self.image_shape[:2]):
            raise ValueError(f'size {size} must be in [1, {min(self.image_shape[:2])}].')
        return self._make_batch(
            epoch_batches.images,
            epoch_batches.labels,
            epoch_batches.key,
            jnp.int32(step),
            size=size,
        )


class DeviceEvalData:
    """Unaugmented eval batches covering every example exactly once.

    The split is padded up to ``num_batches * B`` and pre-reshaped to
    (num_batches, B, ...) sharded along B; ``mask`` is False on padding rows.
    """

    def __init__(
        self,
        split: ArraySplit | LazySplit,
        mesh: Mesh,
        global_batch_size: int,
        mean,
        std,
        dtype=jnp.float32,
    ):
        check_batch(mesh, global_batch_size, f'eval data {split.name}')
        n, b = len(split), global_batch_size
        self.mesh = mesh
        self.global_batch_size = b
        self.num_examples = n
        self.num_batches = math.ceil(n / b)
        self.class_names = split.class_names
        rows = self.num_batches * b
        sharding = NamedSharding(mesh, P(None, AXIS))
        row_numbers = np.arange(rows).reshape(self.num_batches, b)
        # Only the rows of this process's columns of every batch are read.
        self._images, self._labels = LocalRows(split, sharding, row_numbers).put()
        mask = row_numbers < n
        self._mask = jax.make_array_from_callback(mask.shape, sharding, lambda idx: mask[idx])
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

        @functools.partial(jax.jit, out_shardings=NamedSharding(mesh, P(AXIS)))
        def make_batch(images, labels, mask, i):
            return {
                'image': normalize(images[i], mean, std, dtype),
                'label': labels[i],
                'mask': mask[i],
            }

        self._make_batch = make_batch

    def batch(self, i: int) -> dict[str, jax.Array]:
        if not 0 <= i < self.num_batches:
            raise IndexError(f'eval batch {i} out of range [0, {self.num_batches}).')
        return self._make_batch(self._images, self._labels, self._mask, jnp.int32(i))

    def __iter__(self):
        return (self.batch(i) for i in range(self.num_batches))
