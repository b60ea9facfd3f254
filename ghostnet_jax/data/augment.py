"""On-device augmentation and normalization: pure functions, usable inside any jit.

Per-image ops on uint8 batches (crop, flip, TrivialAugment-Wide from ``trivial_augment``,
cutout, random erasing) live here; mixup/cutmix, which need the labels, in ``mixing``.
Random numbers are drawn for the whole global batch at once (shape (B, ...)) so,
with JAX's partitionable threefry, the values do not depend on how the batch is
sharded over devices: 1 and 8 devices see identical augmentations.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ghostnet_jax.data.sharded_random import batch_like as _batch_like
from ghostnet_jax.data.trivial_augment import trivial_augment_wide


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
      trivial_augment: TrivialAugment-Wide (one random op at a random wide-range
        magnitude per image, after crop and flip; see ``trivial_augment.py``).
      random_erasing: probability per image of random erasing (Zhong et al. 2020):
        a rectangle of 2%..1/3 of the area, aspect ratio 0.3..3.3 (log-uniform), set
        to ``fill``; 0 = off.
      mixup_alpha: mixup (Zhang et al. 2018) with lambda ~ Beta(a, a), one lambda per
        batch, each image mixed with its partner in the reversed batch; 0 = off.
      cutmix_alpha: cutmix (Yun et al. 2019), same pairing, one box per batch whose
        clipped area sets lambda; 0 = off. With both alphas > 0 each batch uses one
        of the two, with probability 1/2 each.
      mix_prob: probability per batch that mixup/cutmix is applied at all.
    """

    crop_padding: int = 4
    padding_mode: str = 'reflect'
    flip: bool = True
    cutout: int = 0
    trivial_augment: bool = False
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0

    def __post_init__(self):
        if self.padding_mode not in ('reflect', 'zero'):
            raise ValueError(
                f"padding_mode must be 'reflect' or 'zero', got {self.padding_mode!r}."
            )
        if self.crop_padding < 0 or self.cutout < 0:
            raise ValueError(
                f'crop_padding and cutout must be >= 0, got {self.crop_padding}, {self.cutout}.'
            )
        for name in ('random_erasing', 'mix_prob'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'{name} is a probability in [0, 1], got {getattr(self, name)}.')
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(
                f'mixup_alpha and cutmix_alpha must be >= 0 (0 = off), got '
                f'{self.mixup_alpha}, {self.cutmix_alpha}.'
            )

    @property
    def mixes(self) -> bool:
        """Whether batches carry soft (B, num_classes) targets instead of int labels."""
        return self.mix_prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


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


def random_erasing(
    images: jax.Array,
    key: jax.Array,
    prob: float,
    fill: jax.Array | int = 0,
    scale: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 3.3),
    attempts: int = 10,
) -> jax.Array:
    """With probability ``prob`` per image, sets a random rectangle to ``fill``.

    As torchvision's RandomErasing: area fraction ~ U(scale), aspect ratio log-uniform
    in ``ratio``, side = round(sqrt(area * ratio)); a draw that does not fit is retried
    (all ``attempts`` drawn at once, the first that fits is used; none fits -> no erase).
    """
    if prob == 0:
        return images
    b, h, w, _ = images.shape
    k_apply, k_area, k_ratio, k_y, k_x = jax.random.split(key, 5)
    # Drawn flat and reshaped: a 2-D threefry draw compiles ~5x slower on CPU.
    draw = lambda k, lo, hi: jax.random.uniform(k, (b * attempts,), minval=lo, maxval=hi).reshape(
        b, attempts
    )
    area = h * w * draw(k_area, scale[0], scale[1])
    aspect = jnp.exp(draw(k_ratio, math.log(ratio[0]), math.log(ratio[1])))
    eh = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    ew = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (eh < h) & (ew < w)
    first = jnp.argmax(fits, axis=1)[:, None]
    eh = jnp.take_along_axis(eh, first, axis=1)[:, :, None]  # (B, 1, 1)
    ew = jnp.take_along_axis(ew, first, axis=1)[:, :, None]
    erase = jax.random.bernoulli(k_apply, prob, (b,)) & fits.any(axis=1)
    # Top-left corner uniform over the positions where the rectangle fits.
    y0 = jnp.floor(jax.random.uniform(k_y, (b, 1, 1)) * (h - eh + 1)).astype(jnp.int32)
    x0 = jnp.floor(jax.random.uniform(k_x, (b, 1, 1)) * (w - ew + 1)).astype(jnp.int32)
    eh, ew, y0, x0 = (_batch_like(v, images) for v in (eh, ew, y0, x0))
    erase = _batch_like(erase, images)[:, None, None]
    ys = jnp.arange(h)[None, :, None]
    xs = jnp.arange(w)[None, None, :]
    inside = erase & (ys >= y0) & (ys < y0 + eh) & (xs >= x0) & (xs < x0 + ew)
    fill = jnp.broadcast_to(jnp.asarray(fill, images.dtype), images.shape[-1:])
    return jnp.where(inside[..., None], fill, images)


# New ops take fold_in(key, salt) so the crop/flip/cutout draws, and with them every
# batch of a config that does not use the new ops, stay exactly what they were.
_TRIVIAL_AUGMENT_SALT, _ERASING_SALT = 1, 2


def augment_batch(
    images: jax.Array, key: jax.Array, cfg: AugmentConfig, fill: jax.Array | int = 0
) -> jax.Array:
    """Crop, flip, TrivialAugment-Wide, cutout and random erasing on a uint8 (B, H, W, C)
    batch, in that order (the order of the torchvision recipes); dtype preserved.

    ``fill`` is the cutout and erasing value per channel; pass the rounded dataset mean so
    that the patch becomes ~0 after normalization, as in the original recipes. The
    geometric TrivialAugment ops fill with black, as torchvision's default does.
    Mixup/cutmix need the labels and act on normalized images: see ``mixing.mix_batch``.
    """
    k_crop, k_flip, k_cut = jax.random.split(key, 3)
    images = random_crop(images, k_crop, cfg.crop_padding, cfg.padding_mode)
    if cfg.flip:
        images = random_flip(images, k_flip)
    if cfg.trivial_augment:
        images = trivial_augment_wide(images, jax.random.fold_in(key, _TRIVIAL_AUGMENT_SALT))
    images = cutout(images, k_cut, cfg.cutout, fill)
    return random_erasing(images, jax.random.fold_in(key, _ERASING_SALT), cfg.random_erasing, fill)


def normalize(images: jax.Array, mean, std, dtype=jnp.float32) -> jax.Array:
    """(x - mean) / std per channel, computed in float32, returned as ``dtype``."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return ((images.astype(jnp.float32) - mean) / std).astype(dtype)
