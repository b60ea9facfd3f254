"""On-device augmentation and normalization, checked against numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ghostnet_jax import data as D

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(10, 256, (64, 7, 6, 3), dtype=np.uint8)  # >= 10 so a 0..9 fill stands out.


def _windows(image, pad, mode):
    """All (H, W) windows of the padded image, by numpy."""
    h, w, _ = image.shape
    padded = np.pad(
        image, ((pad, pad), (pad, pad), (0, 0)), mode='reflect' if mode == 'reflect' else 'constant'
    )
    return {
        (dy, dx): padded[dy : dy + h, dx : dx + w]
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
    }


@pytest.mark.parametrize('mode', ['reflect', 'zero'])
def test_crop_is_a_window_of_the_padded_image(mode):
    cfg = D.AugmentConfig(crop_padding=2, padding_mode=mode, flip=False, cutout=0)
    out = np.asarray(jax.jit(lambda x, k: D.augment_batch(x, k, cfg))(IMAGES, jax.random.key(1)))
    assert out.shape == IMAGES.shape and out.dtype == np.uint8
    offsets = []
    for img, o in zip(IMAGES, out):
        matches = [off for off, win in _windows(img, 2, mode).items() if np.array_equal(win, o)]
        assert matches, 'output is not a window of the padded image'
        offsets.append(matches[0])
    assert len(set(offsets)) > 10  # 25 possible offsets, 64 draws: the offset really is random.
    assert (out == 0).any() if mode == 'zero' else not (out == 0).any()


def test_flip_is_exact_and_random():
    cfg = D.AugmentConfig(crop_padding=0, flip=True, cutout=0)
    out = np.asarray(D.augment_batch(IMAGES, jax.random.key(2), cfg))
    flipped = [np.array_equal(o, img[:, ::-1]) for img, o in zip(IMAGES, out)]
    same = [np.array_equal(o, img) for img, o in zip(IMAGES, out)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 16 < sum(flipped) < 48


def test_no_augmentation_is_identity():
    cfg = D.AugmentConfig(crop_padding=0, flip=False, cutout=0)
    np.testing.assert_array_equal(D.augment_batch(IMAGES, jax.random.key(3), cfg), IMAGES)


def test_cutout_sets_a_clipped_square_to_fill():
    size, fill = 3, np.array([1, 2, 3], np.uint8)
    cfg = D.AugmentConfig(crop_padding=0, flip=False, cutout=size)
    out = np.asarray(D.augment_batch(IMAGES, jax.random.key(4), cfg, fill))
    full = 0
    for img, o in zip(IMAGES, out):
        changed = np.any(o != img, axis=-1)
        ys, xs = np.nonzero(changed)
        assert len(ys) > 0
        # The changed pixels form one axis-aligned rectangle of side <= size, filled with `fill`.
        rect = changed[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        assert rect.all() and rect.shape[0] <= size and rect.shape[1] <= size
        np.testing.assert_array_equal(o[changed], np.broadcast_to(fill, (len(ys), 3)))
        full += rect.shape == (size, size)
    assert full > 10  # Mostly whole squares; clipped ones at the borders.


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_normalize_matches_numpy(dtype):
    mean, std = np.array([120.0, 110.0, 100.0]), np.array([60.0, 55.0, 50.0])
    out = D.normalize(jnp.asarray(IMAGES), mean, std, dtype)
    assert out.dtype == dtype
    ref = (IMAGES.astype(np.float64) - mean) / std
    np.testing.assert_allclose(
        np.asarray(out, np.float64),
        ref,
        rtol=1e-2 if dtype == jnp.bfloat16 else 1e-6,
        atol=1e-2 if dtype == jnp.bfloat16 else 1e-5,
    )


def test_channel_stats_matches_numpy():
    split = D.ArraySplit(IMAGES, np.zeros(64, np.int32), ('a',), 'x')
    mean, std = D.channel_stats(split, chunk=7)  # Chunking must not change the result.
    assert mean.dtype == std.dtype == np.float32
    np.testing.assert_allclose(mean, IMAGES.reshape(-1, 3).mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, IMAGES.reshape(-1, 3).std(0), rtol=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match='padding_mode'):
        D.AugmentConfig(padding_mode='edge')
    with pytest.raises(ValueError):
        D.AugmentConfig(cutout=-1)
