"""Fits a run's length to a wall-clock budget (`config.time_budget_minutes`).

A cosine or linear decay must know its length before it starts to decay, so the number of
epochs is chosen from measurements of this machine, twice:

1. Before training: the real train step (compiled for a provisional schedule and timed
   over a few steps; with low-resolution first epochs, `config.data.low_res`, at both
   sizes) and a real validation pass give a first fit. It catches a budget too small for
   one epoch before anything is trained.
2. After the first epoch: the epoch's own steps, timed as the loop ran them, and its
   validation give the fit the run keeps. A handful of calibration steps can be 20%
   faster or slower than a long loop on the same machine, and only the loop shows that.
   A low-resolution run's first epoch trained small, so the refit also times a few
   full-size steps then, on a copy of the trained state, with the step the loop runs.

When warmup spans the first epoch (or the schedule does not depend on the length at
all), that epoch's learning rates are the same for every length, so the refit leaves no
trace: the run equals one trained with the refitted num_epochs from the start. With a
shorter warmup the first epoch trained on the provisional schedule.

With low-resolution first epochs the fit also chooses how many train small:
`epochs_fraction` of them rounded down, or up when only that fits one more epoch, so
less of the budget goes unused.

The fitted length belongs to the run, not to its config (which is never changed): the
plan is stored with every checkpoint and in results.json, and a resumed run keeps it
instead of measuring again, so resume stays exact.

What the budget covers: everything from the trainer's start (data loading, init,
calibration, compiling the step again for the fitted schedule), every epoch's training
and validation, and the final evaluation. Python's own imports before that (a few
seconds) are not counted.
"""
from __future__ import annotations

import logging
import statistics
import time
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp

from ghostnet_jax.training.budget_fit import BudgetPlan, fit_epochs, low_res_note
from ghostnet_jax.training.checkpoints import Checkpointer, CheckpointError
from ghostnet_jax.training.config_checks import ConfigError
from ghostnet_jax.training.state import eval_variables

if TYPE_CHECKING:
    from ghostnet_jax.training.experiment import Experiment

log = logging.getLogger(__name__)

CALIBRATION_STEPS = 5


class BudgetTooSmallError(ConfigError):
    """Not even one epoch fits in the budget (a config error: exit code 2)."""


def plan_budget(budget_minutes: float, started: float, steps_per_epoch: int,
                run_steps: Callable[[int], list[float]], run_validation: Callable[[], None],
                val_examples: int, test_examples: int,
                run_low_res_steps: Callable[[int], list[float]] | None = None,
                low_res_fraction: float = 0.0) -> BudgetPlan:
    """Measures and fits. `run_steps(n)` runs n train steps on a throwaway state and returns
    the seconds of each (the first includes compilation); `run_validation()` runs one
    validation pass; `run_low_res_steps`, when the run trains its first epochs small, the
    same at the low size. Raises BudgetTooSmallError if not one epoch fits."""
    times = run_steps(1 + CALIBRATION_STEPS)
    compile_s, step_s = times[0], statistics.median(times[1:])
    low_res_step_s = 0.0
    if run_low_res_steps is not None and low_res_fraction > 0:
        low_res_step_s = statistics.median(run_low_res_steps(1 + CALIBRATION_STEPS)[1:])
    else:
        low_res_fraction = 0.0
    run_validation()                 # compiles the eval step, which training reuses
    t = time.time()
    run_validation()
    val_eval_s = time.time() - t
    final_eval_s = val_eval_s * (1.0 + test_examples / max(val_examples, 1))
    setup_s = time.time() - started
    budget_s = budget_minutes * 60.0
    epochs, small = _agree(*fit_epochs(
        budget_s, setup_s, compile_s, step_s, steps_per_epoch, val_eval_s, final_eval_s,
        low_res_step_s=low_res_step_s, low_res_fraction=low_res_fraction))
    plan = BudgetPlan(budget_s, setup_s, compile_s, step_s, val_eval_s, final_eval_s,
                      steps_per_epoch, epochs, calibrated_step_s=step_s,
                      low_res_step_s=low_res_step_s, low_res_fraction=low_res_fraction,
                      fitted_small_epochs=small)
    if epochs < 1:
        raise BudgetTooSmallError(
            f'time_budget_minutes={budget_minutes:g} fits no full epoch on this machine: setup '
            f'took {setup_s:.0f} s, compiling the step {compile_s:.0f} s, and one epoch needs '
            f'{plan.epoch_s:.0f} s ({steps_per_epoch} steps of {step_s:.2f} s plus '
            f'{val_eval_s:.0f} s of validation). Raise time_budget_minutes, or choose a '
            'smaller model or a larger batch_size.')
    log.info('Time budget %.0f min: step %.3f s%s, validation %.1f s, compile %.0f s, setup '
             '%.0f s -> %d epochs, predicted to end after %.1f min.', budget_minutes, step_s,
             low_res_note(plan), val_eval_s, compile_s, setup_s, epochs,
             plan.predicted_s / 60)
    return plan


def agree_measurements(*values: float) -> tuple[float, ...]:
    """Process 0's measurements on every process (unchanged in a single-process run)."""
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils
    import numpy as np
    agreed = multihost_utils.broadcast_one_to_all(np.asarray(values, np.float32))
    return tuple(float(v) for v in agreed)


def _agree(*counts: int) -> tuple[int, ...]:
    """Every process trains the same length: process 0's measurement decides."""
    return tuple(int(c) for c in agree_measurements(*counts))


def fit_to_budget(budget_minutes: float, exp: 'Experiment', ckpt: Checkpointer, started: float,
                  make_runner: Callable[['Experiment'], Any], evaluator: Callable,
                  ) -> tuple['Experiment', BudgetPlan | None, Any]:
    """`exp` with its schedule fitted to the budget, the plan, and the calibration's
    compiled runner when the first epoch may train on it (None: build one for `exp`).

    A run with checkpoints keeps the plan stored in its loop state; one that started
    without a budget keeps its num_epochs (plan None). A new run's first epoch trains on
    the calibration's step when its learning rates do not depend on the length (warmup
    spans it): the refit after it then compiles the one step the run keeps."""
    from ghostnet_jax.training.experiment import with_num_epochs
    from ghostnet_jax.training.optim import length_free_steps
    plan = stored_plan(ckpt)
    if plan is None and ckpt.all_steps():
        log.warning('time_budget_minutes=%g is ignored: this run started without a budget, '
                    'and refitting its length now would change its schedule mid-run. It keeps '
                    'num_epochs=%d; use a new --workdir for a budgeted run.', budget_minutes,
                    exp.config.num_epochs)
        return exp, None, None
    if plan is not None:
        if abs(plan.budget_s - budget_minutes * 60.0) > 1e-6:
            log.warning('time_budget_minutes is now %g, but this run was fitted to %g min '
                        '(%d epochs) when it started; it keeps that length. Use a new --workdir '
                        'to fit another budget.', budget_minutes, plan.budget_s / 60,
                        plan.num_epochs)
        return with_num_epochs(exp, plan.num_epochs, plan.decay_respaced_from), plan, None
    test = exp.test_data.num_examples if exp.test_data is not None else 0
    runner = make_runner(exp)
    low_res = exp.config.data.get('low_res')
    low_size = low_res.size if low_res and low_res.size else None
    plan = plan_budget(
        budget_minutes, started, exp.train_data.steps_per_epoch,
        run_steps=lambda n: time_steps(runner, exp.state, exp.train_data, n),
        run_validation=lambda: evaluator(eval_variables(exp.state), exp.val_data),
        val_examples=exp.val_data.num_examples, test_examples=test,
        run_low_res_steps=((lambda n: time_steps(runner, exp.state, exp.train_data, n, low_size))
                           if low_size else None),
        low_res_fraction=low_res.epochs_fraction if low_size else 0.0)
    if length_free_steps(exp.config.optimizer, plan.steps_per_epoch) >= plan.steps_per_epoch:
        return exp, plan, runner
    return with_num_epochs(exp, plan.num_epochs), plan, None


def stored_plan(ckpt: Checkpointer) -> BudgetPlan | None:
    """The plan saved with the newest readable checkpoint, if any."""
    for step in sorted(ckpt.all_steps(), reverse=True):
        try:
            _, host = ckpt.read_host(step)
        except CheckpointError:
            continue     # damaged: the restore sets it aside; an older one knows the plan
        saved = host.get('time_budget')
        return BudgetPlan.from_json(saved) if saved else None
    return None


def time_steps(runner: Any, state: Any, data: Any, n: int, size: int | None = None
               ) -> list[float]:
    """Seconds of each of n real train steps on a copy of `state` (the step donates its
    input, and the run must go on from the untouched one), on epoch 0's batches at image
    side `size` (None: the data's own), each waited for."""
    carried = runner.put(jax.tree.map(jnp.copy, state))
    batches = data.epoch(0)
    times = []
    try:
        for k in range(n):
            t = time.time()
            if k and k % data.steps_per_epoch == 0:   # a streamed epoch is read once, in order
                batches.close()
                batches = data.epoch(0)
            batch = data.batch(batches, k % data.steps_per_epoch, size=size)
            carried, metrics = runner.step(carried, batch)
            jax.block_until_ready((carried, metrics))
            times.append(time.time() - t)
    finally:
        batches.close()
    return times


def full_size_step_s(runner: Any, state: Any, data: Any) -> float:
    """The full-size step of a low-resolution run after its first (small) epoch: the
    median of CALIBRATION_STEPS steps on a copy of the trained state, after one untimed
    step (which compiles the full size for the running step if calibration did not)."""
    return statistics.median(time_steps(runner, state, data, 1 + CALIBRATION_STEPS)[1:])
