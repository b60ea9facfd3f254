"""TrivialAugment-Wide: each op against PIL (the library torchvision applies to PIL images),
the wide magnitude table against the paper's ranges, and the per-image draw."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from ghostnet_jax.data import trivial_augment as T

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
IMAGES[1] = IMAGES[1] // 4 + 90  # low contrast: autocontrast/equalize stretch it
IMAGES[2] = IMAGES[2] // 64 * 64  # four levels: sparse histograms
IMAGES[3, :, :, 1] = 77  # one flat channel: autocontrast/equalize keep it
IMAGES[4, :8] = 255  # saturated block: solarize and blends clip
APPLY = jax.jit(T.apply_ops)
FILL = (0, 0, 0)


def _pil(op, m, image):
    """The op as PIL (and torchvision on PIL images) defines it, at signed magnitude m."""
    img = Image.fromarray(image)
    affine = lambda data: img.transform(img.size, Image.AFFINE, data, Image.NEAREST, fillcolor=FILL)
    return np.asarray(
        {
            'identity': lambda: img,
            'shear_x': lambda: affine((1, m, 0, 0, 1, 0)),
            'shear_y': lambda: affine((1, 0, 0, m, 1, 0)),
            'translate_x': lambda: affine((1, 0, int(m), 0, 1, 0)),
            'translate_y': lambda: affine((1, 0, 0, 0, 1, int(m))),
            'rotate': lambda: img.rotate(m, Image.NEAREST, fillcolor=FILL),
            'brightness': lambda: ImageEnhance.Brightness(img).enhance(1 + m),
            'color': lambda: ImageEnhance.Color(img).enhance(1 + m),
            'contrast': lambda: ImageEnhance.Contrast(img).enhance(1 + m),
            'sharpness': lambda: ImageEnhance.Sharpness(img).enhance(1 + m),
            'posterize': lambda: ImageOps.posterize(img, int(m)),
            'solarize': lambda: ImageOps.solarize(img, m),
            'autocontrast': lambda: ImageOps.autocontrast(img),
            'equalize': lambda: ImageOps.equalize(img),
        }[op]()
    )


def _run(op, m):
    n = len(IMAGES)
    out = APPLY(IMAGES, jnp.full(n, T.OP[op]), jnp.full(n, m, jnp.float32))
    assert out.shape == IMAGES.shape and out.dtype == jnp.uint8
    return np.asarray(out).astype(int), np.stack([_pil(op, m, im) for im in IMAGES]).astype(int)


def test_wide_magnitudes_are_the_papers_ranges():
    m = lambda op, b, neg=False: float(
        T.wide_magnitudes(jnp.array([T.OP[op]]), jnp.array([b]), jnp.array([neg]))[0]
    )
    assert T.NUM_BINS == 31 and len(T.OPS) == 14
    for op, top in (
        ('shear_x', 0.99),
        ('translate_y', 32.0),
        ('rotate', 135.0),
        ('contrast', 0.99),
        ('sharpness', 0.99),
    ):
        assert m(op, 0) == 0.0 and m(op, 30) == pytest.approx(top)
        assert m(op, 30, True) == pytest.approx(-top)  # signed ops
    assert m('rotate', 10) == pytest.approx(45.0)  # 135 / 30 per bin
    assert [m('posterize', b) for b in (0, 2, 3, 5, 15, 28, 30)] == [8, 8, 7, 7, 5, 2, 2]
    assert m('solarize', 0) == 255.0 and m('solarize', 30) == 0.0
    assert m('solarize', 10, True) == pytest.approx(170.0)  # unsigned: never negated
    assert m('posterize', 30, True) == 2.0


# Bins 0 (no-op magnitude), 7, 19 and 30 (widest), both signs where the op has one.
CASES = [
    (op, b, neg)
    for op in T.OPS
    if op not in ('rotate', 'autocontrast')
    for b in (0, 7, 19, 30)
    for neg in ((False, True) if T.SIGNED[T.OP[op]] else (False,))
]


@pytest.mark.parametrize('op,b,neg', CASES)
def test_op_matches_pil(op, b, neg):
    m = float(T.MAGNITUDES[T.OP[op], b]) * (-1 if neg else 1)
    out, ref = _run(op, m)
    if op in ('brightness', 'color', 'contrast', 'sharpness'):
        # PIL blends in C floats and truncates; one in a few thousand values lands on the
        # other side of an integer. Anything more is a real difference.
        diff = np.abs(out - ref)
        assert diff.max() <= 1 and (diff > 0).mean() < 2e-3, (diff.max(), (diff > 0).sum())
    else:
        np.testing.assert_array_equal(out, ref)


def test_enhance_ops_change_the_image():
    # Guards the blend tolerance above: at bin 30 each enhance op moves most values.
    for op in ('brightness', 'color', 'contrast', 'sharpness'):
        out, _ = _run(op, -0.99 if op != 'sharpness' else 0.99)
        assert (out != IMAGES).mean() > 0.3, op


def _source_coords(matrix, h, w):
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    a, b, c, d, e, f = matrix
    return a * xs + b * ys + c, d * xs + e * ys + f


@pytest.mark.parametrize('degrees', [4.5, -31.5, 45.0, 90.0, -126.0, 135.0])
def test_rotate_matches_pil_except_exact_ties(degrees):
    """PIL rounds the inverse-mapped pixel centre in fixed point; where that centre falls
    exactly on a pixel edge (45-degree diagonals) the two may pick neighbours. Every other
    pixel must be identical."""
    out, ref = _run('rotate', degrees)
    h, w = IMAGES.shape[1:3]
    t = -np.deg2rad(degrees)
    cx, cy = w / 2, h / 2
    matrix = (
        np.cos(t),
        np.sin(t),
        cx - np.cos(t) * cx - np.sin(t) * cy,
        -np.sin(t),
        np.cos(t),
        cy + np.sin(t) * cx - np.cos(t) * cy,
    )
    x, y = _source_coords(matrix, h, w)
    tie = (np.abs(x - np.round(x)) < 1e-6) | (np.abs(y - np.round(y)) < 1e-6)
    differs = np.any(out != ref, axis=-1)
    assert not (differs & ~tie[None]).any()
    assert differs.mean() < 0.05
    if degrees == 4.5:
        assert not differs.any()


def test_autocontrast_exact_integers_and_pil_within_one():
    out, ref = _run('autocontrast', 0.0)
    lo = IMAGES.min(axis=(1, 2), keepdims=True).astype(int)
    hi = IMAGES.max(axis=(1, 2), keepdims=True).astype(int)
    x = IMAGES.astype(int)
    exact = np.where(hi > lo, (x - lo) * 255 // np.maximum(hi - lo, 1), x)  # by hand
    np.testing.assert_array_equal(out, exact)
    # PIL computes i * scale + offset in doubles and truncates, so an exact integer can
    # come out one lower.
    assert np.abs(out - ref).max() <= 1
    np.testing.assert_array_equal(out[3, ..., 1], IMAGES[3, ..., 1])  # flat channel kept


def test_affine_fill_and_translate_by_hand():
    image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1) + 1
    out = jax.jit(T.affine_nearest)(image, jnp.array([[1.0, 0, 2, 0, 1, 0]]), 200)
    expected = np.full((4, 4), 200)
    expected[:, :2] = image[0, :, 2:, 0]  # input x + 2 -> output x; the rest is uncovered
    np.testing.assert_array_equal(np.asarray(out)[0, ..., 0], expected)


def test_trivial_augment_draws_one_listed_op_per_image_deterministically():
    n = len(IMAGES)
    run = jax.jit(T.trivial_augment_wide)
    outs = np.stack([np.asarray(run(IMAGES, k)) for k in jax.random.split(jax.random.key(5), 4)])
    np.testing.assert_array_equal(
        np.asarray(run(IMAGES, jax.random.split(jax.random.key(5), 4)[0])), outs[0]
    )  # same key
    assert outs.dtype == np.uint8 and outs.shape[1:] == IMAGES.shape
    # Every output is one (op, bin, sign) of the table applied to its own input image:
    # all 14 * 31 * 2 candidates, in batches of the already compiled shape.
    ops = np.repeat(np.arange(len(T.OPS)), T.NUM_BINS * 2)
    signs = np.tile(np.repeat([1.0, -1.0], T.NUM_BINS), len(T.OPS))
    mags = T.MAGNITUDES[ops, np.tile(np.arange(T.NUM_BINS), 2 * len(T.OPS))]
    mags = np.where(T.SIGNED[ops], mags * signs, mags).astype(np.float32)
    pad = -len(ops) % n
    ops, mags = np.pad(ops, (0, pad)), np.pad(mags, (0, pad))
    used = set()
    for i in range(2):
        same = np.broadcast_to(IMAGES[i], IMAGES.shape)
        candidates = np.concatenate(
            [
                np.asarray(APPLY(same, ops[j : j + n], mags[j : j + n]))
                for j in range(0, len(ops), n)
            ]
        )
        for out in outs[:, i]:
            match = np.all(candidates == out, axis=(1, 2, 3))
            assert match.any()
            used.add(int(ops[np.argmax(match)]))
    assert len(used) >= 5  # 8 draws over 14 ops: the op really varies per image.
