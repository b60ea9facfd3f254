"""Diagnosis and gradient-health rules on hand-made curves and sequences."""

import math

from ghostnet_jax.study.diagnosis import diagnose
from ghostnet_jax.training.grad_health import GradientHealth


def test_overfitting_onset_is_the_epoch_after_the_val_loss_minimum():
    epochs = [1, 2, 3, 4, 5]
    train_loss = [1.0, 0.6, 0.4, 0.25, 0.1]
    val_loss = [1.0, 0.7, 0.65, 0.8, 0.95]  # lowest at epoch 3
    d = diagnose(
        train_loss, [0.6, 0.8, 0.9, 0.95, 0.99], val_loss, [0.6, 0.75, 0.78, 0.77, 0.76], epochs
    )
    assert d['overfitting_epoch'] == 4 and d['verdict'] == 'overfitting'
    assert math.isclose(d['final_gap'], 0.99 - 0.76)
    assert any('turned up after epoch 3' in f for f in d['findings'])


def test_underfitting_and_plateau():
    epochs = [1, 2, 3, 4, 5]
    train_loss = [1.5, 1.2, 1.1, 1.1, 1.1]  # flat over the last 3 epochs
    d = diagnose(
        train_loss,
        [0.4, 0.5, 0.55, 0.55, 0.55],
        [1.5, 1.25, 1.15, 1.15, 1.15],
        [0.4, 0.5, 0.54, 0.54, 0.54],
        epochs,
    )
    assert d['verdict'] == 'underfitting' and d['plateau'] and d['overfitting_epoch'] is None


def test_good_fit_and_too_short():
    d = diagnose([0.5, 0.1], [0.9, 0.99], [0.5, 0.2], [0.9, 0.97], [1, 2])
    assert d['verdict'] == 'good fit'
    assert diagnose([0.5], [0.9], [0.5], [0.9], [1])['verdict'] == 'too short to tell'


def _feed(health, values, group='stage2', start=1):
    out = []
    for i, v in enumerate(values):
        out += health.update(
            start + i, {f'grad_norm/{group}': v, 'grad_norm/head': 1.0, 'loss': 0.5}
        )
    return out


def test_gradient_health_names_the_exploding_stage_once_per_episode():
    health = GradientHealth(window=20, min_history=5, explode_factor=10, vanish_factor=100)
    assert _feed(health, [1.0, 1.2, 0.9, 1.1, 1.0]) == []  # history only
    warnings = _feed(health, [50.0, 60.0], start=6)  # 50 > 10 x median 1.0
    assert len(warnings) == 1 and 'step 6' in warnings[0] and 'stage2' in warnings[0]
    assert 'exploding' in warnings[0]
    assert _feed(health, [1.0], start=8) == []  # back to normal: silent
    again = _feed(health, [float('nan')], start=9)  # a new episode warns again
    assert len(again) == 1 and 'exploding' in again[0]


def test_gradient_health_vanishing_and_reference_from_healthy_values_only():
    health = GradientHealth(window=20, min_history=5, explode_factor=10, vanish_factor=100)
    _feed(health, [1.0] * 5)
    warnings = _feed(health, [0.005], start=6)  # < 1.0 / 100
    assert len(warnings) == 1 and 'vanishing' in warnings[0] and 'stage2' in warnings[0]
    # The unhealthy values did not enter the history: the median is still 1.0.
    assert _feed(health, [0.009, 0.2], start=7) == []
    assert _feed(health, [11.0], start=9) and True


def test_gradient_health_needs_history_before_judging():
    health = GradientHealth(min_history=10)
    assert _feed(health, [1.0, 1000.0, 1e-9]) == []
