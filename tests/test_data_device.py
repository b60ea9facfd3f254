"""Device-resident train/eval data and exact evaluation, on one device (see test_data_multidevice
for 8)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from ghostnet_jax import data as D

N, H, W = 50, 6, 5
RNG = np.random.default_rng(0)
# Label i marks example i, so every batch says exactly which examples it holds.
SPLIT = D.ArraySplit(
    RNG.integers(0, 256, (N, H, W, 3), dtype=np.uint8),
    np.arange(N, dtype=np.int32),
    tuple(f'c{i}' for i in range(N)),
    'synthetic',
)
MEAN, STD = np.array([100.0, 120.0, 140.0], np.float32), np.array([50.0, 60.0, 70.0], np.float32)
NO_AUG = D.AugmentConfig(crop_padding=0, flip=False, cutout=0)


def _mesh(kind='explicit'):
    devices = jax.devices()[:1]
    if kind == 'explicit':
        return jax.make_mesh((1,), ('data',), devices=devices)
    return Mesh(np.array(devices), ('data',))


def _norm(x):
    return (x.astype(np.float64) - MEAN) / STD


def _epoch_labels(data, epoch):
    eb = data.epoch(epoch)
    return np.stack([np.asarray(data.batch(eb, s)['label']) for s in range(data.steps_per_epoch)])


@pytest.mark.parametrize('kind', ['explicit', 'auto'])
def test_unaugmented_batches_are_the_normalized_examples(kind):
    data = D.DeviceTrainData(SPLIT, _mesh(kind), 8, seed=0, augment=NO_AUG, mean=MEAN, std=STD)
    assert data.steps_per_epoch == 6  # 50 // 8, last partial batch dropped.
    eb = data.epoch(0)
    for step in (0, 5):
        b = data.batch(eb, step)
        assert b['image'].shape == (8, H, W, 3) and b['image'].dtype == jnp.float32
        assert b['label'].dtype == jnp.int32
        np.testing.assert_allclose(
            np.asarray(b['image']), _norm(SPLIT.images[np.asarray(b['label'])]), atol=1e-5
        )


def test_each_example_at_most_once_per_epoch_and_new_order_each_epoch():
    data = D.DeviceTrainData(
        SPLIT, _mesh(), 8, seed=0, augment=D.AugmentConfig(), mean=MEAN, std=STD
    )
    e0, e1 = _epoch_labels(data, 0), _epoch_labels(data, 1)
    for labels in (e0, e1):
        assert labels.size == 48 and len(np.unique(labels)) == 48 and labels.max() < N
    assert not np.array_equal(e0, e1)
    assert not np.array_equal(np.sort(e0.ravel()), np.arange(48))  # Shuffled, not a prefix.


def test_same_seed_same_batches_resume_replays_and_seed_matters():
    aug = D.AugmentConfig(cutout=2)
    a = D.DeviceTrainData(SPLIT, _mesh(), 8, seed=3, augment=aug, mean=MEAN, std=STD)
    eb = a.epoch(2)
    run = [a.batch(eb, s) for s in range(a.steps_per_epoch)]
    # A fresh object (as after a restart) resuming at epoch 2, step 4.
    b = D.DeviceTrainData(SPLIT, _mesh('auto'), 8, seed=3, augment=aug, mean=MEAN, std=STD)
    resumed = b.batch(b.epoch(2), 4)
    np.testing.assert_array_equal(np.asarray(resumed['image']), np.asarray(run[4]['image']))
    np.testing.assert_array_equal(np.asarray(resumed['label']), np.asarray(run[4]['label']))
    # Augmentation differs between steps, and a different seed gives a different epoch.
    assert not np.array_equal(np.asarray(run[0]['image']), np.asarray(run[1]['image']))
    c = D.DeviceTrainData(SPLIT, _mesh(), 8, seed=4, augment=aug, mean=MEAN, std=STD)
    assert not np.array_equal(_epoch_labels(c, 2), _epoch_labels(a, 2))


def test_augmented_batch_is_window_of_padded_possibly_flipped_example():
    aug = D.AugmentConfig(crop_padding=2, padding_mode='zero', flip=True)
    data = D.DeviceTrainData(SPLIT, _mesh(), 16, seed=0, augment=aug, mean=MEAN, std=STD)
    b = data.batch(data.epoch(0), 1)
    images = np.asarray(b['image'], np.float64) * STD + MEAN  # Back to [0, 255].
    assert np.abs(images - np.round(images)).max() < 1e-3
    for img, label in zip(np.round(images).astype(np.uint8), np.asarray(b['label'])):
        src = SPLIT.images[label]
        found = False
        for cand in (src, src[:, ::-1]):
            padded = np.pad(cand, ((2, 2), (2, 2), (0, 0)))
            found |= any(
                np.array_equal(padded[dy : dy + H, dx : dx + W], img)
                for dy in range(5)
                for dx in range(5)
            )
        assert found


def test_dtype_and_step_bounds():
    data = D.DeviceTrainData(
        SPLIT, _mesh(), 8, seed=0, augment=NO_AUG, mean=MEAN, std=STD, dtype=jnp.bfloat16
    )
    eb = data.epoch(0)
    assert data.batch(eb, 0)['image'].dtype == jnp.bfloat16
    with pytest.raises(IndexError):
        data.batch(eb, data.steps_per_epoch)


def test_split_smaller_than_a_batch_is_a_clear_error():
    with pytest.raises(D.BatchConfigError, match='50 examples.*smaller batch'):
        D.DeviceTrainData(SPLIT, _mesh(), 64, seed=0, augment=NO_AUG, mean=MEAN, std=STD)
    with pytest.raises(D.BatchConfigError, match='multiple of 1'):
        D.DeviceTrainData(SPLIT, _mesh(), 0, seed=0, augment=NO_AUG, mean=MEAN, std=STD)


@pytest.mark.parametrize('n,b', [(50, 8), (3, 8), (16, 16), (17, 16)])
def test_eval_covers_every_example_exactly_once(n, b):
    split = D.ArraySplit(SPLIT.images[:n], SPLIT.labels[:n], SPLIT.class_names, 'eval')
    data = D.DeviceEvalData(split, _mesh(), b, MEAN, STD)
    assert data.num_examples == n and data.num_batches == -(-n // b)
    seen, images = [], []
    for batch in data:
        mask = np.asarray(batch['mask']).astype(bool)
        seen.extend(np.asarray(batch['label'])[mask])
        images.extend(np.asarray(batch['image'])[mask])
    assert seen == list(range(n))  # In order, once each, padding masked out.
    np.testing.assert_allclose(np.stack(images), _norm(split.images), atol=1e-5)  # Unaugmented.


def _np_reference(images, labels, k):
    logits = _norm(images).reshape(len(images), -1)[:, :k]
    m = logits.max(1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
    correct = logits.argmax(1) == labels
    return correct, -logp[np.arange(len(labels)), labels]


def test_evaluate_sums_counts_exactly():
    k = 7
    labels = RNG.integers(0, k, N).astype(np.int32)
    split = D.ArraySplit(SPLIT.images, labels, tuple(map(str, range(k))), 'eval')
    data = D.DeviceEvalData(split, _mesh(), 16, MEAN, STD)  # 50 = 3 * 16 + 2: padded last batch.
    result = D.evaluate(data, lambda x: x.reshape(x.shape[0], -1)[:, :k], num_classes=k)
    correct, loss = _np_reference(split.images, labels, k)
    assert result['num_examples'] == N
    assert result['correct'] == int(correct.sum())
    np.testing.assert_allclose(result['accuracy'], correct.mean())
    np.testing.assert_allclose(result['loss'], loss.mean(), rtol=1e-5)
    np.testing.assert_array_equal(result['per_class_count'], np.bincount(labels, minlength=k))
    np.testing.assert_array_equal(
        result['per_class_correct'], np.bincount(labels[correct], minlength=k)
    )


def test_eval_counts_ignores_masked_rows():
    logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    c = D.eval_counts(logits, jnp.array([0, 0, 1]), jnp.array([True, True, False]), 2)
    assert int(c['correct']) == 1 and int(c['count']) == 2
    expected_loss = np.log1p(np.exp(-1.0)) + (3.0 + np.log1p(np.exp(-3.0)))  # Hand-computed xent.
    np.testing.assert_allclose(float(c['loss_sum']), expected_loss, rtol=1e-6)
    np.testing.assert_array_equal(c['per_class_count'], [2, 0])
    np.testing.assert_array_equal(c['per_class_correct'], [1, 0])
