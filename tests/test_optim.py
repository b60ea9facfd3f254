import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ghostnet_jax.configs import default
from ghostnet_jax.training import optim


def _cfg(**overrides):
    cfg = default.get_config().optimizer
    cfg.update(overrides)
    return cfg


def _lrs(cfg, steps, spe=10, epochs=10):
    schedule = optim.build_schedule(cfg, spe, epochs)
    return [float(schedule(s)) for s in steps]


def test_warmup_cosine_values():
    # W = 2 epochs * 10 = 20 warmup steps, T = 100; cosine from 0.1 to 0.001 over steps 20..100.
    cfg = _cfg(learning_rate=0.1, warmup_epochs=2.0, min_lr=0.001)
    got = _lrs(cfg, [0, 10, 20, 40, 60, 100, 150])
    want = [
        0.0,
        0.05,
        0.1,
        0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * 0.25)),  # 0.0855018
        0.001 + 0.099 * 0.5,  # halfway: 0.0505
        0.001,
        0.001,  # clamped after the end
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_warmup_linear_values():
    # The same warmup; then a straight line from 0.1 to 0.001 over steps 20..100.
    cfg = _cfg(schedule='warmup_linear', learning_rate=0.1, warmup_epochs=2.0, min_lr=0.001)
    got = _lrs(cfg, [0, 10, 20, 40, 60, 100, 150])
    want = [0.0, 0.05, 0.1, 0.001 + 0.099 * 0.75, 0.001 + 0.099 * 0.5, 0.001, 0.001]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_cosine_without_warmup_starts_at_peak():
    cfg = _cfg(learning_rate=0.2, warmup_epochs=0.0, min_lr=0.0)
    np.testing.assert_allclose(_lrs(cfg, [0, 50, 100]), [0.2, 0.1, 0.0], atol=1e-7)


def test_constant_with_and_without_warmup():
    np.testing.assert_allclose(
        _lrs(_cfg(schedule='constant', learning_rate=0.3, warmup_epochs=0.0), [0, 7, 99]),
        [0.3] * 3,
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        _lrs(_cfg(schedule='constant', learning_rate=0.3, warmup_epochs=1.0), [0, 5, 10, 99]),
        [0.0, 0.15, 0.3, 0.3],
        rtol=1e-6,
    )


def test_piecewise_boundaries_are_absolute_epochs():
    cfg = _cfg(
        schedule='piecewise',
        learning_rate=0.1,
        warmup_epochs=0.0,
        boundaries_epochs=(3, 6),
        decay_factor=0.1,
    )
    np.testing.assert_allclose(
        _lrs(cfg, [0, 29, 30, 59, 60, 99]), [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6
    )


def test_bad_names_list_valid_choices():
    with pytest.raises(ValueError, match='rmsprop.*sgd, adam, adamw'):
        optim.build_optimizer(_cfg(name='rmsprop'), 10, 10)
    with pytest.raises(
        ValueError, match='cosine.*warmup_cosine, warmup_linear, constant, piecewise'
    ):
        optim.build_optimizer(_cfg(schedule='cosine'), 10, 10)


def test_warmup_longer_than_training_only_ramps(caplog):
    # Smoke runs (1 epoch) with the default 5 warmup epochs must still build.
    np.testing.assert_allclose(
        _lrs(_cfg(learning_rate=0.1, warmup_epochs=5.0), [0, 5, 9], spe=10, epochs=1),
        [0.0, 0.01, 0.018],
        rtol=1e-6,
    )
    assert 'never leaves warmup' in caplog.text


def _params():
    return {
        'conv': {'kernel': jnp.array([[1.0, 2.0], [3.0, -4.0]]), 'bias': jnp.array([1.0, 1.0])},
        'bn': {'scale': jnp.array([1.0, 2.0]), 'bias': jnp.array([0.5, 0.5])},
        'head': {'kernel': jnp.arange(1.0, 7.0).reshape(2, 3), 'bias': jnp.array([3.0, 3.0, 3.0])},
        'vec': {'kernel': jnp.array([5.0, 5.0])},  # ndim 1 -> no decay
    }


def _one_step(cfg, params, grads, scale=None):
    tx, schedule = optim.build_optimizer(cfg, steps_per_epoch=10, num_epochs=10, params=params)
    state = tx.init(params)
    if scale is not None:
        state = optim.set_lr_scale(state, scale)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, schedule


def _check_only_kernels_decayed(params, new, factor):
    mask = optim.weight_decay_mask(params)
    assert mask == {
        'conv': {'kernel': True, 'bias': False},
        'bn': {'scale': False, 'bias': False},
        'head': {'kernel': True, 'bias': False},
        'vec': {'kernel': False},
    }
    for (path, p), n, m in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(new), jax.tree.leaves(mask)
    ):
        want = p * factor if m else p
        np.testing.assert_allclose(n, want, rtol=1e-6, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize('name', ['sgd', 'adamw'])
def test_weight_decay_only_on_kernels(name):
    # Zero grads: sgd (coupled L2, no nesterov so the first momentum step is exact) and
    # adamw (decoupled; adam moments of a zero grad give a zero update) both give
    # w <- w - lr * wd * w on kernels and leave everything else bit-identical.
    lr, wd = 0.1, 0.01
    cfg = _cfg(
        name=name,
        schedule='constant',
        warmup_epochs=0.0,
        learning_rate=lr,
        weight_decay=wd,
        nesterov=False,
    )
    params = _params()
    new, _, _ = _one_step(cfg, params, jax.tree.map(jnp.zeros_like, params))
    _check_only_kernels_decayed(params, new, 1 - lr * wd)


def test_adam_weight_decay_is_coupled():
    # Coupled L2 goes through Adam's normalisation: the first step moves each decayed
    # weight by ~lr * sign(w), not lr * wd * w.
    cfg = _cfg(
        name='adam', schedule='constant', warmup_epochs=0.0, learning_rate=0.1, weight_decay=0.01
    )
    params = _params()
    new, _, _ = _one_step(cfg, params, jax.tree.map(jnp.zeros_like, params))
    k = params['conv']['kernel']
    np.testing.assert_allclose(new['conv']['kernel'], k - 0.1 * jnp.sign(k), rtol=1e-5)
    np.testing.assert_array_equal(new['bn']['scale'], params['bn']['scale'])


@pytest.mark.parametrize('clip,want_norm', [(1.0, 1.0), (0.0, 50.0)])
def test_grad_clipping_bounds_update_norm(clip, want_norm):
    cfg = _cfg(
        name='sgd',
        momentum=0.0,
        schedule='constant',
        warmup_epochs=0.0,
        learning_rate=1.0,
        weight_decay=0.0,
        grad_clip_norm=clip,
    )
    params = {'w': {'kernel': jnp.zeros((2, 2))}}
    grads = {'w': {'kernel': jnp.array([[30.0, 40.0], [0.0, 0.0]])}}  # global norm 50
    new, _, _ = _one_step(cfg, params, grads)
    np.testing.assert_allclose(optax.tree.norm(new), want_norm, rtol=1e-6)


def test_plateau_scale_multiplies_effective_lr():
    cfg = _cfg(
        name='sgd',
        momentum=0.0,
        schedule='constant',
        warmup_epochs=0.0,
        learning_rate=0.5,
        weight_decay=0.0,
    )
    params = {'w': {'kernel': jnp.zeros((2,))}}
    grads = {'w': {'kernel': jnp.array([1.0, -2.0])}}
    new, state, schedule = _one_step(cfg, params, grads, scale=0.25)
    np.testing.assert_allclose(new['w']['kernel'], [-0.125, 0.25], rtol=1e-6)
    assert float(optim.get_lr_scale(state)) == 0.25
    assert float(optim.current_learning_rate(schedule, state, 0)) == pytest.approx(0.125)
    # Also inside jit, as the train step would log it.
    lr = jax.jit(lambda s, t: optim.current_learning_rate(schedule, s, t))(state, jnp.int32(3))
    assert float(lr) == pytest.approx(0.125)
    # The scale lives in the state, so it persists to the next update.
    tx, _ = optim.build_optimizer(cfg, 10, 10, params)
    updates, _ = tx.update(grads, state, new)
    np.testing.assert_allclose(updates['w']['kernel'], [-0.125, 0.25], rtol=1e-6)


def test_set_lr_scale_is_pure_and_jittable():
    tx, _ = optim.build_optimizer(_cfg(), 10, 10, _params())
    state = tx.init(_params())
    s2 = optim.set_lr_scale(state, 0.5)
    assert float(optim.get_lr_scale(state)) == 1.0 and float(optim.get_lr_scale(s2)) == 0.5
    s3 = jax.jit(optim.set_lr_scale)(state, 0.125)
    assert float(optim.get_lr_scale(s3)) == 0.125
    assert jax.tree.structure(s3) == jax.tree.structure(state)


def test_ema():
    assert optim.init_ema({'a': jnp.ones(2)}, 0.0) is None
    assert optim.update_ema(None, {'a': jnp.ones(2)}, 0.9) is None
    ema = optim.init_ema({'a': jnp.ones(2)}, 0.9)
    ema = optim.update_ema(ema, {'a': jnp.zeros(2)}, 0.9)
    ema = optim.update_ema(ema, {'a': jnp.full(2, 10.0)}, 0.9)
    np.testing.assert_allclose(ema['a'], [0.9 * 0.9 + 0.1 * 10.0] * 2, rtol=1e-6)  # 1.81


def test_ema_warmup_decay():
    from ghostnet_jax.training.optim import ema_decay_at

    # min(decay, (1 + t) / (10 + t)), hand-computed.
    got = [float(ema_decay_at(0.99, t)) for t in (0, 1, 8, 80, 10_000)]
    np.testing.assert_allclose(got, [0.1, 2 / 11, 0.5, 0.9, 0.99], rtol=1e-6)


@pytest.mark.parametrize('name', ['sgd', 'adamw'])
def test_frozen_backbone_moves_only_the_classifier_then_everything(name):
    """optimizer.freeze_backbone_epochs (configs/finetune.py): during the frozen steps the
    rest gets exactly zero updates (momentum, Adam moments and weight decay included), so
    it starts from where it was, unlike a run without the freeze; then it trains."""
    cfg = default.get_config().optimizer
    cfg.update(
        name=name,
        warmup_epochs=0.0,
        schedule='constant',
        learning_rate=0.1,
        weight_decay=0.1,
        freeze_backbone_epochs=1.5,
    )
    params = {'classifier': {'kernel': jnp.ones((2, 2))}, 'stem': {'kernel': jnp.ones((2, 2))}}
    grads = jax.tree.map(jnp.ones_like, params)
    tx, _ = optim.build_optimizer(cfg, 2, 10, params)  # 3 frozen steps
    state = tx.init(params)
    assert optim.get_lr_scale(state) == 1.0  # the plateau scale is still found
    moved = []
    for _ in range(5):
        updates, state = tx.update(grads, state, params)
        moved.append(
            (
                float(jnp.abs(updates['classifier']['kernel']).sum()),
                float(jnp.abs(updates['stem']['kernel']).sum()),
            )
        )
    assert all(head > 0 for head, _ in moved)
    assert [rest for _, rest in moved[:3]] == [0.0, 0.0, 0.0] and moved[3][1] > 0
    if name != 'sgd':
        return  # Adam's step count advanced while frozen (see freeze_backbone)
    # Nothing built up while frozen: the first free step equals a fresh optimizer's first.
    plain = cfg.copy_and_resolve_references()
    plain.freeze_backbone_epochs = 0.0
    fresh, _ = optim.build_optimizer(plain, 2, 10, params)
    first, _ = fresh.update(grads, fresh.init(params), params)
    np.testing.assert_allclose(
        moved[3][1], float(jnp.abs(first['stem']['kernel']).sum()), rtol=1e-6
    )
