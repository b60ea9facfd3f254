"""Mixup and cutmix on a normalized batch, with soft targets.

Each image is mixed with its partner in the reversed batch (image i with B-1-i, as timm
does), so the pairs depend only on the global batch, never on how it is sharded. One
lambda per batch (timm's 'batch' mode): the whole batch shares it, and with cutmix one box.
Targets are lambda * one_hot(label) + (1 - lambda) * one_hot(partner's label); label
smoothing, being linear, is applied by the loss on top.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mix_targets(labels: jax.Array, num_classes: int, lam: jax.Array) -> jax.Array:
    """(B,) int labels -> (B, num_classes) float32 targets mixed with the reversed batch."""
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return lam * one_hot + (1.0 - lam) * one_hot[::-1]


def mixup(images: jax.Array, lam: jax.Array) -> jax.Array:
    """lam * x + (1 - lam) * reversed(x), computed in float32."""
    x = images.astype(jnp.float32)
    return (lam * x + (1.0 - lam) * x[::-1]).astype(images.dtype)


def cutmix_box(key: jax.Array, lam: jax.Array, height: int, width: int) -> tuple[jax.Array, ...]:
    """A box covering ~(1 - lam) of the image at a uniform centre, clipped at the border
    (Yun et al. 2019): returns y0, y1, x0, x1 (int32 scalars, half-open)."""
    ky, kx = jax.random.split(key)
    ratio = jnp.sqrt(1.0 - lam)
    cut_h = (height * ratio).astype(jnp.int32)
    cut_w = (width * ratio).astype(jnp.int32)
    cy = jax.random.randint(ky, (), 0, height)
    cx = jax.random.randint(kx, (), 0, width)
    y0, y1 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    x0, x1 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    return y0, y1, x0, x1


def cutmix(images: jax.Array, box: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
    """Pastes ``box`` of the reversed batch into every image; returns the images and the
    lambda the clipped box implies (the fraction of each image that stayed its own)."""
    _, h, w, _ = images.shape
    y0, y1, x0, x1 = (jnp.asarray(v, jnp.int32) for v in box)
    ys = jnp.arange(h)[:, None]
    xs = jnp.arange(w)[None, :]
    inside = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    lam = 1.0 - ((y1 - y0) * (x1 - x0)).astype(jnp.float32) / (h * w)
    return jnp.where(inside[None, :, :, None], images[::-1], images), lam


def mix_batch(
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    mix_prob: float = 1.0,
    switch_prob: float = 0.5,
) -> tuple[jax.Array, jax.Array]:
    """Mixup or cutmix of a normalized (B, H, W, C) batch: (images, (B, num_classes) targets).

    With probability ``mix_prob`` the batch is mixed; when both alphas are > 0 it is
    cutmix with probability ``switch_prob`` and mixup otherwise. An unmixed batch gets
    one-hot targets. Every draw is one scalar per batch, so nothing depends on sharding.
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        raise ValueError('mix_batch needs mixup_alpha > 0 or cutmix_alpha > 0.')
    _, h, w, _ = images.shape
    k_apply, k_switch, k_lam, k_box = jax.random.split(key, 4)
    apply = jax.random.bernoulli(k_apply, mix_prob)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = jax.random.bernoulli(k_switch, switch_prob)
    else:
        use_cutmix = jnp.asarray(cutmix_alpha > 0)
    # One Beta draw whose parameter depends on the choice: a Beta sampler is a rejection
    # loop that takes ~1 s to compile on CPU, so not two of them.
    alpha = jnp.where(use_cutmix, cutmix_alpha, mixup_alpha)
    lam = jnp.where(apply, jax.random.beta(k_lam, alpha, alpha).astype(jnp.float32), 1.0)

    out = images
    if mixup_alpha > 0:
        out = mixup(images, jnp.where(use_cutmix, 1.0, lam))
    if cutmix_alpha > 0:
        # An empty box (lambda 1) leaves the batch as it is when cutmix is not taken.
        cut, lam_cut = cutmix(images, cutmix_box(k_box, jnp.where(use_cutmix, lam, 1.0), h, w))
        out = jnp.where(use_cutmix, cut, out)
        lam = jnp.where(use_cutmix, lam_cut, lam)
    return out, mix_targets(labels, num_classes, lam)
