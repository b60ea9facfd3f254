"""TrivialAugment-Wide (Müller & Hutter, ICCV 2021) on uint8 batches, inside jit.

Each image gets one op drawn uniformly from ``OPS`` and one magnitude bin drawn
uniformly from ``NUM_BINS`` (signed ops flip their sign with probability 1/2), with
the "wide" magnitude ranges of the paper (the ones torchvision's TrivialAugmentWide
documents): shear 0..0.99, translate 0..32 px, rotate 0..135 degrees, enhance
factors 1 +- 0..0.99, posterize 8..2 bits, solarize threshold 255..0.

The ops follow PIL's definitions (nearest-neighbour affine with fill, ImageEnhance
blends, ImageOps LUTs) so that PIL is the test reference. Rather than computing all
14 ops for every image and selecting, the ops are grouped by kind, and each image
passes once through each of three stages that are exact identities for ops of
another kind:
  1. one nearest-neighbour affine warp (identity matrix unless shear/translate/rotate),
  2. one PIL-style blend with a degenerate image (factor 1 unless an enhance op),
  3. one per-channel lookup table (identity unless posterize/solarize/autocontrast/equalize).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ghostnet_jax.data.sharded_random import batch_like

OPS = (
    'identity',
    'shear_x',
    'shear_y',
    'translate_x',
    'translate_y',
    'rotate',
    'brightness',
    'color',
    'contrast',
    'sharpness',
    'posterize',
    'solarize',
    'autocontrast',
    'equalize',
)
OP = {name: i for i, name in enumerate(OPS)}
NUM_BINS = 31


def _wide_table() -> tuple[np.ndarray, np.ndarray]:
    """(len(OPS), NUM_BINS) magnitudes and which ops are signed, per the paper's wide space."""
    bins = np.arange(NUM_BINS)
    up = lambda hi: np.linspace(0.0, hi, NUM_BINS)
    table = np.zeros((len(OPS), NUM_BINS), np.float64)
    for name in ('shear_x', 'shear_y', 'brightness', 'color', 'contrast', 'sharpness'):
        table[OP[name]] = up(0.99)
    table[OP['translate_x']] = table[OP['translate_y']] = up(32.0)
    table[OP['rotate']] = up(135.0)
    table[OP['posterize']] = 8 - np.round(bins / ((NUM_BINS - 1) / 6))  # bits kept, 8..2
    table[OP['solarize']] = np.linspace(255.0, 0.0, NUM_BINS)  # threshold
    signed = np.zeros(len(OPS), bool)
    for name in (
        'shear_x',
        'shear_y',
        'translate_x',
        'translate_y',
        'rotate',
        'brightness',
        'color',
        'contrast',
        'sharpness',
    ):
        signed[OP[name]] = True
    return table.astype(np.float32), signed


MAGNITUDES, SIGNED = _wide_table()


def wide_magnitudes(ops: jax.Array, bins: jax.Array, negate: jax.Array) -> jax.Array:
    """Signed magnitude of each (op, bin); ``negate`` flips the sign of signed ops only."""
    m = jnp.asarray(MAGNITUDES)[ops, bins]
    return jnp.where(jnp.asarray(SIGNED)[ops] & negate, -m, m)


# ---- stage 1: geometry -------------------------------------------------------------------


def affine_nearest(images: jax.Array, matrix: jax.Array, fill: jax.Array | int = 0) -> jax.Array:
    """PIL ``Image.transform(size, AFFINE, matrix, NEAREST, fillcolor=fill)`` per image.

    ``matrix`` (B, 6) = (a, b, c, d, e, f) maps output pixel centres (x + .5, y + .5) to
    input coordinates (a x + b y + c, d x + e y + f), floored; outside is ``fill``.
    """
    _, h, w, c = images.shape
    m = matrix.astype(jnp.float32)[:, :, None, None]
    xs = jnp.arange(w, dtype=jnp.float32)[None, None, :] + 0.5
    ys = jnp.arange(h, dtype=jnp.float32)[None, :, None] + 0.5
    xi = jnp.floor(m[:, 0] * xs + m[:, 1] * ys + m[:, 2]).astype(jnp.int32)
    yi = jnp.floor(m[:, 3] * xs + m[:, 4] * ys + m[:, 5]).astype(jnp.int32)
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    # Per-image gathers under vmap: no reshape of the batch-sharded axis is needed.
    gather = lambda img, y, x: img[y, x]
    out = jax.vmap(gather)(images, jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1))
    fill = jnp.broadcast_to(jnp.asarray(fill, images.dtype), (c,))
    return jnp.where(inside[..., None], out, fill)


def rotate_matrix(degrees: jax.Array, height: int, width: int) -> jax.Array:
    """PIL ``Image.rotate(degrees)``'s inverse matrix (counter-clockwise, about the centre)."""
    a = -jnp.deg2rad(degrees.astype(jnp.float32))
    cos, sin = jnp.cos(a), jnp.sin(a)
    cx, cy = width / 2, height / 2
    return jnp.stack(
        [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy], axis=-1
    )


def _geometry_matrix(ops: jax.Array, m: jax.Array, height: int, width: int) -> jax.Array:
    one, zero = jnp.ones_like(m), jnp.zeros_like(m)
    shift = jnp.trunc(m)  # whole pixels, like int(magnitude) in torchvision
    rows = {
        'shear_x': (one, m, zero, zero, one, zero),
        'shear_y': (one, zero, zero, m, one, zero),
        'translate_x': (one, zero, shift, zero, one, zero),
        'translate_y': (one, zero, zero, zero, one, shift),
    }
    matrix = jnp.stack((one, zero, zero, zero, one, zero), axis=-1)
    for name, row in rows.items():
        matrix = jnp.where((ops == OP[name])[:, None], jnp.stack(row, axis=-1), matrix)
    return jnp.where((ops == OP['rotate'])[:, None], rotate_matrix(m, height, width), matrix)


# ---- stage 2: ImageEnhance blends --------------------------------------------------------


def blend(degenerate: jax.Array, images: jax.Array, factor: jax.Array) -> jax.Array:
    """PIL ``Image.blend(degenerate, image, factor)``: float32, truncated, clipped to uint8.

    ``factor`` is per image (B,); a factor of 1 returns ``images`` exactly.
    """
    d = degenerate.astype(jnp.float32)
    f = factor.astype(jnp.float32)[:, None, None, None]
    out = jnp.trunc(d + f * (images.astype(jnp.float32) - d))
    return jnp.clip(out, 0, 255).astype(jnp.uint8)


def grayscale(images: jax.Array) -> jax.Array:
    """PIL's RGB -> L conversion (ITU-R 601-2 luma, 16-bit fixed point), shape (B, H, W, 1)
    int32."""
    x = images.astype(jnp.int32)
    return (x[..., 0:1] * 19595 + x[..., 1:2] * 38470 + x[..., 2:3] * 7471 + 0x8000) >> 16


def smooth(images: jax.Array) -> jax.Array:
    """PIL ``ImageFilter.SMOOTH`` (3x3 kernel, centre 5, others 1, /13, rounded); the
    one-pixel border keeps its input values, as PIL's 3x3 filter does."""
    x = images.astype(jnp.int32)
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    total = sum(padded[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) + 4 * x
    out = (2 * total + 13) // 26  # round(total / 13); never exactly halfway
    border = jnp.zeros((h, w), bool).at[1:-1, 1:-1].set(True)
    return jnp.where(border[None, :, :, None], out, x)


def _degenerate(images: jax.Array, ops: jax.Array) -> jax.Array:
    gray = grayscale(images)
    n = images.shape[1] * images.shape[2]
    # ImageEnhance.Contrast: a constant image of int(mean luma + 0.5), exactly in integers.
    mean = (2 * jnp.sum(gray, axis=(1, 2, 3), keepdims=True) + n) // (2 * n)
    pick = lambda name: (ops == OP[name])[:, None, None, None]
    out = images.astype(jnp.int32)
    out = jnp.where(pick('brightness'), 0, out)
    out = jnp.where(pick('color'), gray, out)
    out = jnp.where(pick('contrast'), mean, out)
    return jnp.where(pick('sharpness'), smooth(images), out)


# ---- stage 3: ImageOps lookup tables -----------------------------------------------------


def apply_lut(images: jax.Array, lut: jax.Array) -> jax.Array:
    """``out[b, y, x, c] = lut[b, c, images[b, y, x, c]]`` for a (B, C, 256) table."""
    channels = jnp.arange(images.shape[-1])
    return jax.vmap(lambda t, img: t[channels, img.astype(jnp.int32)])(lut, images)


def posterize_lut(bits: jax.Array) -> jax.Array:
    """ImageOps.posterize: keep the top ``bits`` bits. (B,) -> (B, 256)."""
    drop = (8 - bits.astype(jnp.int32))[:, None]
    return (jnp.arange(256, dtype=jnp.int32)[None] >> drop) << drop


def solarize_lut(threshold: jax.Array) -> jax.Array:
    """ImageOps.solarize: invert values >= ``threshold``. (B,) -> (B, 256)."""
    i = jnp.arange(256, dtype=jnp.int32)[None]
    return jnp.where(i < threshold.astype(jnp.float32)[:, None], i, 255 - i)


def autocontrast_lut(images: jax.Array) -> jax.Array:
    """ImageOps.autocontrast (cutoff 0): stretch each channel's [min, max] to [0, 255].

    Exact integer form floor((i - lo) * 255 / (hi - lo)); PIL computes it in doubles and
    lands one lower on some exact integers (e.g. when hi - lo divides (i - lo) * 255).
    """
    lo = jnp.min(images, axis=(1, 2)).astype(jnp.int32)[..., None]  # (B, C, 1)
    hi = jnp.max(images, axis=(1, 2)).astype(jnp.int32)[..., None]
    i = jnp.arange(256, dtype=jnp.int32)
    stretched = jnp.clip(jnp.maximum(i - lo, 0) * 255 // jnp.maximum(hi - lo, 1), 0, 255)
    return jnp.where(hi > lo, stretched, i)


def equalize_lut(images: jax.Array) -> jax.Array:
    """ImageOps.equalize per channel: lut[i] = (step // 2 + #pixels below i) // step with
    step = (#pixels - #pixels at the channel's max) // 255; identity for a flat channel."""
    _, h, w, _ = images.shape

    def one_channel(v):  # v: (H, W) uint8 of one image
        v = v.reshape(-1).astype(jnp.int32)
        hist = jnp.bincount(v, length=256)
        top = jnp.max(v)
        step = (h * w - hist[top]) // 255
        lut = jnp.clip((step // 2 + jnp.cumsum(hist) - hist) // jnp.maximum(step, 1), 0, 255)
        identity = (jnp.min(v) == top) | (step == 0)
        return jnp.where(identity, jnp.arange(256, dtype=jnp.int32), lut)

    per_image = jax.vmap(one_channel, in_axes=-1)  # (H, W, C) -> (C, 256)
    return jax.vmap(per_image)(images)


def _lookup(images: jax.Array, ops: jax.Array, m: jax.Array) -> jax.Array:
    c = images.shape[-1]
    per_image = lambda lut: jnp.broadcast_to(lut[:, None, :], (lut.shape[0], c, 256))
    pick = lambda name: (ops == OP[name])[:, None, None]
    lut = jnp.broadcast_to(jnp.arange(256, dtype=jnp.int32), (images.shape[0], c, 256))
    lut = jnp.where(pick('posterize'), per_image(posterize_lut(m)), lut)
    lut = jnp.where(pick('solarize'), per_image(solarize_lut(m)), lut)
    lut = jnp.where(pick('autocontrast'), autocontrast_lut(images), lut)
    lut = jnp.where(pick('equalize'), equalize_lut(images), lut)
    return apply_lut(images, lut.astype(jnp.uint8))


def apply_ops(
    images: jax.Array, ops: jax.Array, magnitudes: jax.Array, fill: jax.Array | int = 0
) -> jax.Array:
    """Applies op ``ops[i]`` (an index into ``OPS``) at signed magnitude ``magnitudes[i]``
    to image i of a uint8 (B, H, W, C) batch; ``fill`` fills pixels the geometry uncovers.

    Magnitudes are the op's own unit: shear factor, pixels, degrees, enhance offset (factor
    1 + m), posterize bits, solarize threshold; ignored by identity/autocontrast/equalize.
    """
    _, h, w, _ = images.shape
    m = magnitudes.astype(jnp.float32)
    # One op per image, so the stage order does not change any result; this order is the
    # fast one: the LUT stage's histograms and min/max read the input batch, and on XLA:CPU
    # the same reductions over an in-program blend output ran 4-8x slower.
    images = _lookup(images, ops, m)
    enhance = (ops >= OP['brightness']) & (ops <= OP['sharpness'])
    images = blend(_degenerate(images, ops), images, jnp.where(enhance, 1.0 + m, 1.0))
    return affine_nearest(images, _geometry_matrix(ops, m, h, w), fill)


def trivial_augment_wide(images: jax.Array, key: jax.Array, fill: jax.Array | int = 0) -> jax.Array:
    """One uniformly drawn op at a uniformly drawn wide-range magnitude per image."""
    b = images.shape[0]
    k_op, k_bin, k_sign = jax.random.split(key, 3)
    ops = jax.random.randint(k_op, (b,), 0, len(OPS))
    bins = jax.random.randint(k_bin, (b,), 0, NUM_BINS)
    magnitudes = wide_magnitudes(ops, bins, jax.random.bernoulli(k_sign, 0.5, (b,)))
    # Table look-ups on replicated draws first; only then give them the batch's sharding.
    return apply_ops(images, batch_like(ops, images), batch_like(magnitudes, images), fill)
