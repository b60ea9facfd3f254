"""ghostnet_jax.load / TrainedModel.predict against the trainer's own numbers.

The reference run (conftest.base_run, the real training CLI) evaluated its best checkpoint
on the validation split at the end (results.json) and every epoch (metrics.jsonl):
predict on the same images must reproduce those accuracies and losses.
"""

import json

import numpy as np
import pytest
import train_harness as h

import ghostnet_jax
from ghostnet_jax.data import load_split
from ghostnet_jax.serving.loading import bucket_size, read_eval_variables
from ghostnet_jax.training.checkpoints import CheckpointError


@pytest.fixture(scope='module')
def model(base_run):
    """The best checkpoint, with buckets up to 8 (shared: each bucket compiles once)."""
    return ghostnet_jax.load(base_run, max_batch=8)


def _val_split(trainer, base_run):
    config = json.loads((base_run / 'config.json').read_text())
    return load_split(
        config['data']['source'], config['data']['val_split'], cache_dir=trainer.data_cache
    )


def _accuracy_and_loss(probs, labels):
    return (
        float(np.mean(probs.argmax(-1) == labels)),
        float(np.mean(-np.log(probs[np.arange(len(labels)), labels]))),
    )


def test_load_reproduces_the_runs_validation_results(trainer, base_run, model):
    results = json.loads((base_run / 'results.json').read_text())
    # which='best' by default: the checkpoint the trainer evaluated at the end
    assert model.step == results['step']
    assert model.class_names == tuple(results['class_names'])
    val = _val_split(trainer, base_run)
    probs = model.predict(val.images)
    assert probs.shape == (results['val']['num_examples'], model.num_classes)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    accuracy, loss = _accuracy_and_loss(probs, val.labels)
    assert accuracy == pytest.approx(results['val']['accuracy'], abs=1e-9)
    assert loss == pytest.approx(results['val']['loss'], abs=1e-5)


def test_every_path_form_and_step_selection(trainer, base_run):
    steps = h.finished_steps(base_run)
    first = steps[0]
    logged = h.val_epochs(base_run)[first // h.STEPS_PER_EPOCH]
    val = _val_split(trainer, base_run)
    # The step directory itself, and the checkpoints/ dir with a step number: the accuracy
    # the trainer logged for that epoch.
    for model in (
        ghostnet_jax.load(base_run / 'checkpoints' / str(first)),
        ghostnet_jax.load(base_run / 'checkpoints', first),
    ):
        assert model.step == first
        accuracy, loss = _accuracy_and_loss(model.predict(val.images), val.labels)
        assert accuracy == pytest.approx(logged['accuracy'], abs=1e-9)
        assert loss == pytest.approx(logged['loss'], abs=1e-5)
    assert ghostnet_jax.load(base_run, 'latest').step == steps[-1]


def test_batches_of_any_size_compile_a_few_buckets(model):
    images = np.stack(
        [model.prepare(p) for p in [np.full((20, 24, 3), v, np.uint8) for v in range(0, 250, 12)]]
    )
    assert images.shape == (21, *model.image_shape)  # other sizes resized as trained
    compiled = model._jitted._cache_size()
    whole = model.predict(images)  # 8 + 8 + 5 (padded to 8)
    for n in (1, 2, 3, 5, 7):
        np.testing.assert_allclose(model.predict(images[:n]), whole[:n], atol=1e-6)
    single = model.predict(images[4])
    np.testing.assert_allclose(single, whole[4], atol=1e-6)
    # uint8 buckets 1, 2, 4, 8 at most (fewer if another test compiled some already)
    assert model._jitted._cache_size() - compiled <= 4
    compiled = model._jitted._cache_size()
    model.predict(images[:6])
    model.predict(images[:3])
    assert model._jitted._cache_size() == compiled
    assert [bucket_size(n, 8) for n in (1, 2, 3, 5, 8)] == [1, 2, 4, 8, 8]
    assert model.predict(images[:0]).shape == (0, model.num_classes)


def test_float_images_in_unit_range_equal_uint8(model):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, *model.image_shape), dtype=np.uint8)
    np.testing.assert_allclose(
        model.predict(images.astype(np.float32) / 255.0), model.predict(images), atol=1e-5
    )
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        model.predict(images.astype(np.float32))  # pixel units in a float array
    with pytest.raises(ValueError, match='load_images'):
        model.predict(np.zeros((2, 7, 7, 3), np.uint8))  # wrong size: says how to fix it


def test_load_errors_say_what_exists(base_run, tmp_path):
    with pytest.raises(CheckpointError, match='available steps'):
        ghostnet_jax.load(base_run, 99999)
    with pytest.raises(CheckpointError, match='expected a training workdir'):
        ghostnet_jax.load(tmp_path)
    with pytest.raises(CheckpointError, match='does not exist'):
        ghostnet_jax.load(tmp_path / 'missing')


def test_ema_weights_are_preferred_when_kept(tmp_path):
    """What the trainer evaluates (state.eval_variables): EMA params and batch statistics
    where present and not None, else the live ones."""
    import orbax.checkpoint as ocp

    live = {'params': {'w': np.zeros(3, np.float32)}, 'batch_stats': {'m': np.zeros(2, np.float32)}}
    ema = {
        'ema_params': {'w': np.ones(3, np.float32)},
        'ema_batch_stats': {'m': np.ones(2, np.float32)},
    }
    for name, tree in (('with_ema', {**live, **ema}), ('without', {**live, 'ema_params': None})):
        with ocp.PyTreeCheckpointer() as ckptr:
            ckptr.save(tmp_path / name / 'state', tree)
    got = read_eval_variables(tmp_path / 'with_ema')
    np.testing.assert_array_equal(got['params']['w'], 1)
    np.testing.assert_array_equal(got['batch_stats']['m'], 1)
    got = read_eval_variables(tmp_path / 'without')
    np.testing.assert_array_equal(got['params']['w'], 0)
    np.testing.assert_array_equal(got['batch_stats']['m'], 0)
