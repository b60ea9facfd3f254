"""On-device augmentation and normalization: pure functions, usable inside any jit.

Random numbers are drawn for the whole global batch at once (shape (B, ...)) so,
with JAX's partitionable threefry, the values do not depend on how the batch is
sharded over devices: 1 and 8 devices see identical augmentations.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """CIFAR-style augmentation.

    Attributes:
      crop_padding: pad each side by this many pixels, then crop back to the
        original size at a uniformly random offset (0 = no crop).
      padding_mode: 'reflect' (mirror without repeating the edge, like numpy and
        torchvision) or 'zero'.
      flip: random horizontal flip with probability 1/2.
      cutout: side of a square set to ``fill`` at a uniformly random center
        (clipped at the borders, as in DeVries & Taylor 2017); 0 = off.
    """

    crop_padding: int = 4
    padding_mode: str = 'reflect'
    flip: bool = True
    cutout: int = 0

    def __post_init__(self):
        if self.padding_mode not in ('reflect', 'zero'):
            raise ValueError(
                f"padding_mode must be 'reflect' or 'zero', got {self.padding_mode!r}."
            )
        if self.crop_padding < 0 or self.cutout < 0:
            raise ValueError(
                f'crop_padding and cutout must be >= 0, got {self.crop_padding}, {self.cutout}.'
            )


def _batch_like(values: jax.Array, images: jax.Array) -> jax.Array:
    """Gives per-example random values the batch sharding of ``images``.

    Only matters under an Explicit-axes mesh (``jax.make_mesh``'s default), where
    mixing a batch-sharded and a replicated operand is a type error; the values
    themselves are drawn at global shape either way, so they never depend on sharding.
    """
    sharding = getattr(jax.typeof(images), 'sharding', None)
    spec = getattr(sharding, 'spec', ())
    if not spec or spec[0] is None:
        return values
    return jax.sharding.reshard(
        values, NamedSharding(sharding.mesh, P(spec[0], *[None] * (values.ndim - 1)))
    )


def random_crop(images: jax.Array, key: jax.Array, padding: int, mode: str) -> jax.Array:
    """Pads (B, H, W, C) by ``padding`` on H and W and crops an (H, W) window per image."""
    if padding == 0:
        return images
    b, h, w, c = images.shape
    if mode == 'reflect' and padding >= min(h, w):
        raise ValueError(f'reflect padding {padding} needs images larger than it, got {h}x{w}.')
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    padded = jnp.pad(images, pad, mode='reflect' if mode == 'reflect' else 'constant')
    offsets = _batch_like(jax.random.randint(key, (b, 2), 0, 2 * padding + 1), padded)
    crop_one = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
    return jax.vmap(crop_one)(padded, offsets)


def random_flip(images: jax.Array, key: jax.Array) -> jax.Array:
    flips = _batch_like(jax.random.bernoulli(key, 0.5, (images.shape[0],)), images)
    return jnp.where(flips[:, None, None, None], images[:, :, ::-1, :], images)


def cutout(images: jax.Array, key: jax.Array, size: int, fill: jax.Array | int = 0) -> jax.Array:
    """Sets a ``size`` x ``size`` square (clipped at the border) at a random center to ``fill``."""
    if size == 0:
        return images
    b, h, w, _ = images.shape
    ky, kx = jax.random.split(key)
    cy = _batch_like(jax.random.randint(ky, (b, 1, 1), 0, h), images)
    cx = _batch_like(jax.random.randint(kx, (b, 1, 1), 0, w), images)
    y0, x0 = cy - size // 2, cx - size // 2
    ys = jnp.arange(h)[None, :, None]
    xs = jnp.arange(w)[None, None, :]
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    fill = jnp.broadcast_to(jnp.asarray(fill, images.dtype), images.shape[-1:])
    return jnp.where(inside[..., None], fill, images)


def augment_batch(
    images: jax.Array, key: jax.Array, cfg: AugmentConfig, fill: jax.Array | int = 0
) -> jax.Array:
    """Crop, flip and cutout on a (B, H, W, C) batch; dtype (uint8) preserved.

    ``fill`` is the cutout value per channel; pass the rounded dataset mean so that
    the patch becomes ~0 after normalization, as in the original cutout recipe.
    """
    k_crop, k_flip, k_cut = jax.random.split(key, 3)
    images = random_crop(images, k_crop, cfg.crop_padding, cfg.padding_mode)
    if cfg.flip:
        images = random_flip(images, k_flip)
    return cutout(images, k_cut, cfg.cutout, fill)


def normalize(images: jax.Array, mean, std, dtype=jnp.float32) -> jax.Array:
    """(x - mean) / std per channel, computed in float32, returned as ``dtype``."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return ((images.astype(jnp.float32) - mean) / std).astype(dtype)
