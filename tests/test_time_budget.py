"""Fitting a run's length to a wall-clock budget (training/time_budget.py), by hand."""

import time

import pytest

from ghostnet_jax.training.config_checks import ConfigError
from ghostnet_jax.training.epoch_loop import EpochRun
from ghostnet_jax.training.time_budget import (
    SAFETY_FRACTION,
    BudgetPlan,
    BudgetTooSmallError,
    first_fit,
    fit_epochs,
    refit_after_epoch,
)


def test_fit_epochs_by_hand():
    # 600 s * 0.97 = 582; minus setup 20, one more compile 30, final evaluation 10 -> 522 s
    # for epochs of 100 steps * 0.5 s + 5 s validation = 55 s: 9 whole epochs (495 s).
    assert fit_epochs(600, 20, 30, 0.5, 100, 5, 10, safety=0.03) == (9, 0)  # (epochs, small)
    # One second less per epoch's step total moves the boundary: 522 / 54 = 9.67 -> 9,
    # 522 / 52 = 10.04 -> 10.
    assert fit_epochs(600, 20, 30, 0.47, 100, 5, 10, safety=0.03) == (10, 0)
    assert fit_epochs(60, 50, 30, 0.5, 100, 5, 10) == (0, 0)  # setup alone eats the budget


def _fake_steps(times):
    def run_steps(n):
        assert n == len(times)
        return list(times)

    return run_steps


def test_plan_uses_the_median_step_and_keeps_compile_apart():
    calls = []
    started = time.time()
    plan = first_fit(
        10.0,
        started,
        steps_per_epoch=100,
        run_steps=_fake_steps([40.0, 0.5, 0.9, 0.4, 0.5, 0.6]),
        run_validation=lambda: calls.append(1),
        val_examples=1000,
        test_examples=3000,
    )
    assert len(calls) == 2  # one compiling pass, one timed
    assert plan.compile_s == 40.0 and plan.step_s == 0.5
    assert plan.val_eval_s < 0.5
    assert plan.final_eval_s == pytest.approx(4 * plan.val_eval_s)
    expected, _ = fit_epochs(
        600.0, plan.setup_s, 40.0, 0.5, 100, plan.val_eval_s, plan.final_eval_s
    )
    assert plan.num_epochs == expected == 10  # (582 - 40 - ~0) / (50 + ~0)
    assert plan.predicted_s <= 600.0 * (1 - SAFETY_FRACTION)
    assert BudgetPlan.from_json(plan.to_json()) == plan


def test_too_small_a_budget_is_a_config_error_naming_the_measurements():
    with pytest.raises(BudgetTooSmallError) as e:
        first_fit(
            0.5,
            time.time(),
            steps_per_epoch=100,
            run_steps=_fake_steps([5.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
            run_validation=lambda: None,
            val_examples=10,
            test_examples=0,
        )
    assert isinstance(e.value, ConfigError)
    message = str(e.value)
    assert 'time_budget_minutes=0.5 fits no full epoch' in message
    assert '100 steps of 1.00 s' in message and 'Raise time_budget_minutes' in message


def _plan(num_epochs=19, step_s=0.484):
    # The 60-minute plan of configs/cpu_hour.py's session-4 run, rounded.
    return BudgetPlan(
        budget_s=3600.0,
        setup_s=87.0,
        compile_s=37.0,
        step_s=step_s,
        val_eval_s=6.6,
        final_eval_s=10.0,
        steps_per_epoch=351,
        num_epochs=num_epochs,
        calibrated_step_s=step_s,
    )


def test_refit_shortens_a_run_whose_loop_is_slower_than_its_calibration():
    # 3600 * 0.97 = 3492; minus 300 s elapsed, 10 s final evaluation and 37 s to compile
    # the step again -> 3145 s for epochs of 351 * 0.6 + 6.6 = 217.2 s: 14 more (3040.8).
    plan = refit_after_epoch(
        _plan(),
        epochs_done=1,
        elapsed_s=300.0,
        step_s=0.6,
        val_eval_s=6.6,
        must_recompile=True,
        length_matters=True,
    )
    assert plan.num_epochs == 15 and plan.recompiles and plan.refitted
    assert plan.step_s == 0.6 and plan.calibrated_step_s == 0.484
    assert plan.predicted_s == pytest.approx(300 + 37 + 14 * 217.2 + 10)
    assert plan.predicted_s <= 3600 * (1 - SAFETY_FRACTION)
    assert BudgetPlan.from_json(plan.to_json()) == plan


def test_refit_keeps_a_length_that_still_fits_without_compiling_again():
    # The running step already spans 15 epochs and they fit (14 * 217.2 = 3040.8 <= 3182):
    # recompiling could only buy 14 (3145 / 217.2), so the length and the step stay.
    plan = refit_after_epoch(
        _plan(num_epochs=15, step_s=0.6),
        epochs_done=1,
        elapsed_s=300.0,
        step_s=0.6,
        val_eval_s=6.6,
        must_recompile=False,
        length_matters=True,
    )
    assert plan.num_epochs == 15 and not plan.recompiles
    assert plan.predicted_s == pytest.approx(300 + 14 * 217.2 + 10)


def test_refit_lengthens_a_run_that_is_faster_than_planned():
    # 3145 / (351 * 0.4 + 6.6 = 147.0) = 21.4 -> 21 more; the plan said 15.
    plan = refit_after_epoch(
        _plan(num_epochs=15, step_s=0.6),
        epochs_done=1,
        elapsed_s=300.0,
        step_s=0.4,
        val_eval_s=6.6,
        must_recompile=False,
        length_matters=True,
    )
    assert plan.num_epochs == 22 and plan.recompiles


def test_refit_of_a_length_free_schedule_never_charges_a_compile():
    # Constant / piecewise schedules: 3182 / 217.2 = 14.65 -> 14 more, no compile.
    plan = refit_after_epoch(
        _plan(),
        epochs_done=1,
        elapsed_s=300.0,
        step_s=0.6,
        val_eval_s=6.6,
        must_recompile=True,
        length_matters=False,
    )
    assert plan.num_epochs == 15 and not plan.recompiles


def test_refit_never_asks_for_fewer_epochs_than_are_done():
    plan = refit_after_epoch(
        _plan(),
        epochs_done=1,
        elapsed_s=3500.0,
        step_s=0.6,
        val_eval_s=6.6,
        must_recompile=True,
        length_matters=True,
    )
    assert plan.num_epochs == 1


def test_the_loop_step_leaves_out_the_first_window():
    # Start at t=0; log points after 50 steps (t=40: a 30 s compile inside), 100 (t=70)
    # and 151 (t=100.6): (100.6 - 40) / (151 - 50) = 0.6 s per step.
    run = EpochRun(None, None, 151, [(0, 0.0), (50, 40.0), (100, 70.0), (151, 100.6)])
    assert run.seconds_per_step() == pytest.approx(0.6)
    # One window only (a tiny epoch): all of it counts.
    assert EpochRun(None, None, 4, [(0, 0.0), (4, 2.0)]).seconds_per_step() == pytest.approx(0.5)


def test_a_long_cpu_run_is_told_its_length_and_the_cpu_recipe():
    from ghostnet_jax.training.trainer import long_cpu_run_note

    # The default recipe on a 2-core CPU: 200 epochs of 351 steps at ~1 s a step.
    note = long_cpu_run_note(1.0, 200 * 351, 200)
    assert note.startswith(
        'At 1.00 s per step on this CPU, the 70200 steps left (200 epochs) will take about 20 hours'
    )
    assert 'configs/cpu_hour.py' in note
    assert long_cpu_run_note(0.4, 8000, 20) is None  # ~53 minutes: nothing to say
