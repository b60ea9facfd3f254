"""Fitting a run's length to a wall-clock budget (training/time_budget.py), by hand."""
import time

import pytest

from ghostnet_jax.training.config_checks import ConfigError
from ghostnet_jax.training.time_budget import (SAFETY_FRACTION, BudgetPlan, BudgetTooSmallError,
                                               fit_epochs, plan_budget)


def test_fit_epochs_by_hand():
    # 600 s * 0.97 = 582; minus setup 20, one more compile 30, final evaluation 10 -> 522 s
    # for epochs of 100 steps * 0.5 s + 5 s validation = 55 s: 9 whole epochs (495 s).
    assert fit_epochs(600, 20, 30, 0.5, 100, 5, 10, safety=0.03) == 9
    # One second less per epoch's step total moves the boundary: 522 / 54 = 9.67 -> 9,
    # 522 / 52 = 10.04 -> 10.
    assert fit_epochs(600, 20, 30, 0.47, 100, 5, 10, safety=0.03) == 10
    assert fit_epochs(60, 50, 30, 0.5, 100, 5, 10) == 0      # setup alone eats the budget


def _fake_steps(times):
    def run_steps(n):
        assert n == len(times)
        return list(times)
    return run_steps


def test_plan_uses_the_median_step_and_keeps_compile_apart():
    calls = []
    started = time.time()
    plan = plan_budget(10.0, started, steps_per_epoch=100,
                       run_steps=_fake_steps([40.0, 0.5, 0.9, 0.4, 0.5, 0.6]),
                       run_validation=lambda: calls.append(1),
                       val_examples=1000, test_examples=3000)
    assert len(calls) == 2                       # one compiling pass, one timed
    assert plan.compile_s == 40.0 and plan.step_s == 0.5
    assert plan.val_eval_s < 0.5
    assert plan.final_eval_s == pytest.approx(4 * plan.val_eval_s)
    expected = fit_epochs(600.0, plan.setup_s, 40.0, 0.5, 100, plan.val_eval_s,
                          plan.final_eval_s)
    assert plan.num_epochs == expected == 10     # (582 - 40 - ~0) / (50 + ~0)
    assert plan.predicted_s <= 600.0 * (1 - SAFETY_FRACTION)
    assert BudgetPlan.from_json(plan.to_json()) == plan


def test_too_small_a_budget_is_a_config_error_naming_the_measurements():
    with pytest.raises(BudgetTooSmallError) as e:
        plan_budget(0.5, time.time(), steps_per_epoch=100,
                    run_steps=_fake_steps([5.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
                    run_validation=lambda: None, val_examples=10, test_examples=0)
    assert isinstance(e.value, ConfigError)
    message = str(e.value)
    assert 'time_budget_minutes=0.5 fits no full epoch' in message
    assert '100 steps of 1.00 s' in message and 'Raise time_budget_minutes' in message
