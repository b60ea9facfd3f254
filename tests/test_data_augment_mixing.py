"""Random erasing, mixup/cutmix with soft targets, the loss on soft targets and test-time
flip averaging: hand-computed references and invariants (see test_data_multidevice for
1 vs 8 devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ghostnet_jax import data as D
from ghostnet_jax.configs import default
from ghostnet_jax.data import mixing as M
from ghostnet_jax.training import steps
from ghostnet_jax.training.config_checks import ConfigError, validate_config

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(10, 256, (32, 16, 16, 3), dtype=np.uint8)  # >= 10: a 0..9 fill stands out


# ---- random erasing ----------------------------------------------------------------------


def test_random_erasing_sets_one_rectangle_of_bounded_area_and_ratio():
    fill = np.array([1, 2, 3], np.uint8)
    out = np.asarray(
        jax.jit(lambda x, k: D.augment.random_erasing(x, k, 1.0, fill))(IMAGES, jax.random.key(0))
    )
    assert out.shape == IMAGES.shape and out.dtype == np.uint8
    erased = 0
    for img, o in zip(IMAGES, out):
        changed = np.any(o != img, axis=-1)
        if not changed.any():
            continue  # no draw fitted (rare at 16x16)
        erased += 1
        ys, xs = np.nonzero(changed)
        rect = changed[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        assert rect.all()  # one axis-aligned rectangle
        np.testing.assert_array_equal(o[changed], np.broadcast_to(fill, (len(ys), 3)))
        h, w = rect.shape
        # area in [2%, 1/3] of 256 px and ratio in [0.3, 3.3], up to rounding of each side
        assert (np.sqrt(0.02 * 256) - 1) ** 2 <= h * w <= (np.sqrt(256 / 3) + 1) ** 2
        assert 0.3 / 2 <= h / w <= 3.3 * 2
    assert erased >= 28


def test_random_erasing_probability_and_off():
    np.testing.assert_array_equal(D.augment.random_erasing(IMAGES, jax.random.key(1), 0.0), IMAGES)
    erase = jax.jit(D.augment.random_erasing, static_argnums=2)
    out = np.asarray(erase(IMAGES, jax.random.key(1), 0.5, 0))
    erased = np.any(out != IMAGES, axis=(1, 2, 3)).sum()
    assert 6 <= erased <= 26  # Binomial(32, 1/2)


# ---- mixup / cutmix ----------------------------------------------------------------------


def test_mixup_of_two_known_images_and_targets_by_hand():
    a = np.full((1, 2, 2, 1), 10.0, np.float32)
    b = np.full((1, 2, 2, 1), -2.0, np.float32)
    out = np.asarray(M.mixup(jnp.asarray(np.concatenate([a, b])), jnp.float32(0.75)))
    np.testing.assert_allclose(out[0], np.full((2, 2, 1), 0.75 * 10 + 0.25 * -2))  # 7.0
    np.testing.assert_allclose(out[1], np.full((2, 2, 1), 0.75 * -2 + 0.25 * 10))  # 1.0
    targets = np.asarray(M.mix_targets(jnp.array([0, 2]), 3, jnp.float32(0.75)))
    np.testing.assert_allclose(targets, [[0.75, 0, 0.25], [0.25, 0, 0.75]])


def test_cutmix_known_box_and_lambda_by_hand():
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 1)
    out, lam = M.cutmix(jnp.asarray(x), (1, 3, 0, 2))  # rows 1-2, columns 0-1
    expected = x.copy()
    expected[0, 1:3, 0:2] = x[1, 1:3, 0:2]
    expected[1, 1:3, 0:2] = x[0, 1:3, 0:2]
    np.testing.assert_array_equal(np.asarray(out), expected)
    assert float(lam) == 1 - 4 / 16


def test_cutmix_box_is_clipped_and_its_size_follows_lambda():
    for i, lam in enumerate(np.linspace(0.0, 1.0, 21)):
        y0, y1, x0, x1 = map(int, M.cutmix_box(jax.random.key(i), jnp.float32(lam), 16, 12))
        assert 0 <= y0 <= y1 <= 16 and 0 <= x0 <= x1 <= 12
        side = np.sqrt(1 - lam)
        # Unclipped sides are 2 * (int(size * side) // 2); clipping only shrinks them.
        assert y1 - y0 <= int(16 * side) and x1 - x0 <= int(12 * side)
    y0, y1, x0, x1 = map(int, M.cutmix_box(jax.random.key(0), jnp.float32(1.0), 16, 12))
    assert y0 == y1 and x0 == x1  # lambda 1: an empty box, the batch stays as it is


# Alphas are static (they decide which code exists), mix_prob is traced: one compile each.
MIX = jax.jit(M.mix_batch, static_argnums=(3, 4, 5))
X8 = jnp.asarray(IMAGES[:8], jnp.float32) / 255.0
LABELS8 = jnp.arange(8)  # all distinct: lambda can be read back


@pytest.mark.parametrize('mixup_alpha,cutmix_alpha', [(0.5, 0.0), (0.0, 1.0), (0.5, 1.0)])
def test_mix_batch_invariants(mixup_alpha, cutmix_alpha):
    run = lambda k: MIX(X8, LABELS8, k, 10, mixup_alpha, cutmix_alpha, 1.0)
    kinds = set()
    for seed in range(6):
        images, targets = map(np.asarray, run(jax.random.key(seed)))
        again = run(jax.random.key(seed))
        np.testing.assert_array_equal(images, np.asarray(again[0]))  # deterministic
        assert images.shape == X8.shape and images.dtype == np.float32
        assert targets.shape == (8, 10) and targets.dtype == np.float32
        np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)  # label mass
        assert (targets >= 0).all()
        lam = targets[np.arange(8), np.asarray(LABELS8)]
        partner = targets[np.arange(8), np.asarray(LABELS8)[::-1]]
        np.testing.assert_allclose(lam + partner, 1.0, rtol=1e-6)  # only the pair
        assert np.allclose(lam, lam[0])  # one per batch
        own, rev = np.asarray(X8), np.asarray(X8)[::-1]
        from_own = np.all(images == own, axis=-1)
        from_rev = np.all(images == rev, axis=-1)
        if (from_own | from_rev).all() and not np.isclose(lam[0], 1.0):  # cutmix
            kinds.add('cutmix')
            np.testing.assert_allclose(from_own.mean(axis=(1, 2)), lam, atol=1e-6)
        elif not np.isclose(lam[0], 1.0):  # mixup
            kinds.add('mixup')
            np.testing.assert_allclose(images, lam[0] * own + (1 - lam[0]) * rev, atol=1e-6)
    expected = {k for k, a in (('mixup', mixup_alpha), ('cutmix', cutmix_alpha)) if a > 0}
    assert kinds == expected


def test_mix_prob_zero_gives_the_batch_and_one_hot_targets():
    images, targets = MIX(X8, LABELS8, jax.random.key(0), 10, 0.5, 1.0, 0.0)
    np.testing.assert_array_equal(np.asarray(images), np.asarray(X8))
    np.testing.assert_array_equal(np.asarray(targets), np.eye(10)[:8])


def test_mixup_lambda_follows_beta():
    lam = np.array(
        [
            float(MIX(X8, LABELS8, k, 10, 0.5, 0.0, 1.0)[1][0, 0])
            for k in jax.random.split(jax.random.key(0), 400)
        ]
    )
    # Beta(0.5, 0.5): mean 1/2, variance 1/8, U-shaped: 2/pi * asin(sqrt(0.067)) = 1/6 of
    # the mass in each tail below 0.067 / above 0.933 (bounds ~3.5 standard errors).
    assert abs(lam.mean() - 0.5) < 0.06 and abs(lam.var() - 0.125) < 0.015
    assert 0.25 < (lam < 0.067).mean() + (lam > 0.933).mean() < 0.42


# ---- through DeviceTrainData -------------------------------------------------------------

N = 40
SPLIT = D.ArraySplit(
    IMAGES[np.arange(N) % 32],
    (np.arange(N) % 10).astype(np.int32),
    tuple(map(str, range(10))),
    'synthetic',
)
MEAN, STD = np.array([100.0, 120.0, 140.0], np.float32), np.array([50.0, 60.0, 70.0], np.float32)
# Cutmix only: TrivialAugment and erasing go through DeviceTrainData in the 1 vs 8 device
# test, and each op compiles for seconds.
CUTMIX = D.AugmentConfig(cutmix_alpha=1.0, mix_prob=0.9)


def _mesh():
    return jax.make_mesh((1,), ('data',), devices=jax.devices()[:1])


def test_device_batches_with_cutmix_are_soft_and_replay_exactly():
    a = D.DeviceTrainData(SPLIT, _mesh(), 8, seed=3, augment=CUTMIX, mean=MEAN, std=STD)
    eb = a.epoch(1)
    run = [a.batch(eb, s) for s in range(a.steps_per_epoch)]
    for b in run:
        assert b['image'].shape == (8, 16, 16, 3) and b['image'].dtype == jnp.float32
        assert b['label'].shape == (8, 10) and b['label'].dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(b['label']).sum(-1), 1.0, rtol=1e-6)
        lo, hi = (0 - MEAN) / STD, (255 - MEAN) / STD  # mixing stays in the pixel range
        assert (np.asarray(b['image']) >= lo - 1e-5).all() and (
            np.asarray(b['image']) <= hi + 1e-5
        ).all()
    a.batch(a.epoch(0), 2)  # other work in between must not matter: batches are pure
    resumed = a.batch(a.epoch(1), 3)
    for k in ('image', 'label'):
        np.testing.assert_array_equal(np.asarray(resumed[k]), np.asarray(run[3][k]))
    assert not np.array_equal(np.asarray(run[0]['image']), np.asarray(run[1]['image']))


def test_new_ops_leave_the_crop_flip_cutout_draws_alone():
    # The new ops draw from their own fold_in keys: switching erasing on changes only the
    # erased rectangles, so configs without the new switches keep the batches they had.
    run = jax.jit(D.augment_batch, static_argnums=2)
    key = jax.random.key(9)
    base = np.asarray(run(IMAGES, key, D.AugmentConfig(cutout=4), 7))
    erased = np.asarray(run(IMAGES, key, D.AugmentConfig(cutout=4, random_erasing=1.0), 7))
    for b, e in zip(base, erased):
        changed = np.any(b != e, axis=-1)
        if changed.any():
            ys, xs = np.nonzero(changed)
            assert (e[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] == 7).all()
    assert np.any(base != erased)


def test_augment_config_rejects_bad_values():
    for bad in ({'random_erasing': 1.5}, {'mix_prob': -0.1}, {'mixup_alpha': -1.0}):
        with pytest.raises(ValueError):
            D.AugmentConfig(**bad)
    assert not D.AugmentConfig(mixup_alpha=1.0, mix_prob=0.0).mixes
    assert D.AugmentConfig(cutmix_alpha=1.0).mixes and not D.AugmentConfig().mixes


@pytest.mark.parametrize(
    'field,value,words',
    [
        ('random_erasing', 2.0, ['data.augment.random_erasing', '[0, 1]', '2.0']),
        ('mix_prob', -0.5, ['data.augment.mix_prob', '[0, 1]']),
        ('cutmix_alpha', -1.0, ['data.augment.cutmix_alpha', '0 (off)', 'positive']),
    ],
)
def test_config_errors_name_the_field_and_valid_values(field, value, words):
    config = default.get_config()
    config.data.augment[field] = value
    with pytest.raises(ConfigError) as e:
        validate_config(config, default.get_config())
    assert all(w in str(e.value) for w in words), str(e.value)


# ---- loss on soft targets, test-time flip ------------------------------------------------


def test_cross_entropy_soft_targets_by_hand():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    target = jnp.array([[0.75, 0.0, 0.25]])
    logp = np.array([2.0, 0.0, -1.0]) - np.log(np.exp([2.0, 0.0, -1.0]).sum())
    for smoothing in (0.0, 0.3):
        t = 0.7 * np.array([0.75, 0, 0.25]) + 0.3 / 3 if smoothing else np.array([0.75, 0, 0.25])
        np.testing.assert_allclose(
            float(steps.cross_entropy(logits, target, smoothing)[0]), -(t * logp).sum(), rtol=1e-6
        )
    # Int labels and their one-hot targets give the same loss.
    np.testing.assert_allclose(
        steps.cross_entropy(logits, jnp.array([2]), 0.1),
        steps.cross_entropy(logits, jnp.array([[0.0, 0, 1]]), 0.1),
        rtol=1e-6,
    )
    np.testing.assert_array_equal(steps.hard_labels(jnp.array([[0.3, 0.7], [0.6, 0.4]])), [1, 0])
    np.testing.assert_array_equal(steps.hard_labels(jnp.array([1, 0])), [1, 0])


class _ColumnModel:
    """A 'model' whose 3 logits are the means of the first three image columns, so a
    horizontal flip changes them (it maps column j to W-1-j)."""

    def apply(self, variables, images, train):
        assert train is False
        return images[:, :, :3, 0].mean(axis=1) * variables['scale']


def test_eval_flip_averages_probabilities_of_image_and_mirror():
    images = jnp.asarray(RNG.normal(size=(4, 5, 6, 1)), jnp.float32)
    variables = {'scale': 3.0}
    plain = steps.eval_logits(variables, images, model=_ColumnModel())
    x = np.asarray(images)
    a = x[:, :, :3, 0].mean(1) * 3.0
    b = x[:, :, ::-1][:, :, :3, 0].mean(1) * 3.0
    np.testing.assert_allclose(np.asarray(plain), a, rtol=1e-6)
    softmax = lambda z: (
        np.exp(z - z.max(1, keepdims=True))
        / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)
    )
    expected = np.log((softmax(a) + softmax(b)) / 2)
    flipped = steps.eval_logits(variables, images, model=_ColumnModel(), flip=True)
    assert flipped.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(flipped), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.exp(np.asarray(flipped)).sum(1), 1.0, rtol=1e-6)
