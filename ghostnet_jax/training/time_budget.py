"""Fits a run's length to a wall-clock budget (`config.time_budget_minutes`): the plan, its
arithmetic and its measurements. The trainer makes two calls, from its phases:
`first_fit` before training and `refit_after_epoch` after epoch 1; each returns a
`BudgetPlan`, whose `num_epochs` the trainer then sets as the run's length.

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

import dataclasses
import logging
import statistics
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from ghostnet_jax.training.checkpoints import Checkpointer, CheckpointError
from ghostnet_jax.training.config_checks import ConfigError
from ghostnet_jax.training.low_res import low_res_epoch_choices, low_res_epochs

log = logging.getLogger(__name__)

CALIBRATION_STEPS = 5
# Share of the budget kept in reserve for what calibration cannot see coming: checkpoint
# writes, log flushes, epoch-to-epoch jitter of the step time.
SAFETY_FRACTION = 0.03


class BudgetTooSmallError(ConfigError):
    """Not even one epoch fits in the budget (a config error: exit code 2)."""


@dataclasses.dataclass(frozen=True)
class BudgetPlan:
    """The measurements behind a fitted length, and the length. Times in seconds."""

    budget_s: float
    setup_s: float  # trainer start to the end of calibration
    compile_s: float  # the train step's first call; paid once more after fitting
    step_s: float  # median of the timed steps
    val_eval_s: float  # one validation pass, compiled
    final_eval_s: float  # estimate: validation and test passes of the final weights
    steps_per_epoch: int
    num_epochs: int
    # Set by each refit (`refit_after_epoch`), after epoch `epochs_done`: from then on step_s
    # and val_eval_s are the loop's own, `fitted_at_s` is the wall time of the refit and
    # `compile_s` counts only if the refit changed the length.
    epochs_done: int = 0
    fitted_at_s: float = 0.0
    recompiles: bool = True
    calibrated_step_s: float = 0.0  # the first fit's step_s, kept for the record
    # config.data.low_res: the step at the low size (0: off), the configured share of
    # epochs at it, and the count of small epochs the fit chose (0: the share rounded
    # down, as in plans stored before the fit could round it up).
    low_res_step_s: float = 0.0
    low_res_fraction: float = 0.0
    fitted_small_epochs: int = 0

    @property
    def small_epochs(self) -> int:
        """How many of the first epochs train at the low size."""
        if not self.low_res_step_s:
            return 0
        return self.fitted_small_epochs or low_res_epochs(self.num_epochs, self.low_res_fraction)

    @property
    def epoch_s(self) -> float:
        """One full-size epoch, trained and validated."""
        return self.steps_per_epoch * self.step_s + self.val_eval_s

    def epochs_s(self, first: int, num_epochs: int) -> float:
        """Epochs first..num_epochs-1 of a `num_epochs` run, trained and validated."""
        return _epochs_s(
            first,
            num_epochs,
            self.steps_per_epoch,
            self.step_s,
            self.val_eval_s,
            self.low_res_step_s,
            self.small_epochs,
        )

    def sizes_ahead(self, first: int, num_epochs: int) -> int:
        """Distinct image sizes among epochs first..num_epochs-1: the compiles a new step
        function pays for them."""
        return _sizes_ahead(first, num_epochs, self.small_epochs)

    @property
    def refitted(self) -> bool:
        return self.epochs_done > 0

    @property
    def predicted_s(self) -> float:
        start = self.fitted_at_s if self.refitted else self.setup_s
        compiles = _compiles(self.recompiles, self.epochs_done, self.num_epochs, self.small_epochs)
        return (
            start
            + compiles * self.compile_s
            + self.epochs_s(self.epochs_done, self.num_epochs)
            + self.final_eval_s
        )

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d['predicted_s'] = round(self.predicted_s, 1)
        return d

    @classmethod
    def fields(cls) -> set[str]:
        """The names a plan's JSON holds (its fields and `predicted_s`)."""
        return {f.name for f in dataclasses.fields(cls)} | {'predicted_s'}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> 'BudgetPlan':
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _epochs_s(
    first: int,
    num_epochs: int,
    steps_per_epoch: int,
    step_s: float,
    val_eval_s: float,
    low_res_step_s: float,
    small: int,
) -> float:
    """Epochs first..num_epochs-1 of a run whose first `small` epochs train small."""
    n_small = max(0, small - first)
    n_full = max(0, num_epochs - max(first, small))
    return n_small * (steps_per_epoch * low_res_step_s + val_eval_s) + n_full * (
        steps_per_epoch * step_s + val_eval_s
    )


def _sizes_ahead(first: int, num_epochs: int, small: int) -> int:
    if first >= num_epochs:
        return 0
    return int(first < small) + int(num_epochs > max(first, small))


def _compiles(new_step: bool, first: int, num_epochs: int, small: int) -> int:
    """Compiles still to pay from epoch `first` on. A new step function compiles once per
    size ahead; a kept one may still meet the full size for the first time at the switch
    from the low size (counted: the safe side)."""
    if new_step:
        return _sizes_ahead(first, num_epochs, small)
    return int(first < small < num_epochs)


def _most_epochs(first: int, fits: Callable[[int], bool]) -> int:
    """The largest n >= first with fits(n) (first if none), for costs that grow with n."""
    n = first
    while n < 100_000 and fits(n + 1):
        n += 1
    return n


def _most_epochs_and_small(
    first: int, choices: Callable[[int], tuple[int, ...]], fits: Callable[[int, int], bool]
) -> tuple[int, int]:
    """The most epochs n >= first that fit with one of their counts of small epochs, and
    the smallest such count (the full size trains better; small epochs only fill time)."""

    def small(n: int) -> int | None:
        return next((k for k in choices(n) if fits(n, k)), None)

    n = _most_epochs(first, lambda n: small(n) is not None)
    found = small(n)
    return n, choices(n)[0] if found is None else found


def _small_choices(low_res_step_s: float, fraction: float) -> Callable[[int], tuple[int, ...]]:
    if not low_res_step_s:
        return lambda n: (0,)
    return lambda n: low_res_epoch_choices(n, fraction)


def fit_epochs(
    budget_s: float,
    setup_s: float,
    compile_s: float,
    step_s: float,
    steps_per_epoch: int,
    val_eval_s: float,
    final_eval_s: float,
    safety: float = SAFETY_FRACTION,
    low_res_step_s: float = 0.0,
    low_res_fraction: float = 0.0,
) -> tuple[int, int]:
    """Whole epochs (each trained and validated) that fit in what the budget leaves after
    setup, the compiles ahead (one per image size) and the final evaluation, keeping
    `safety` of it in reserve, and how many of them train small. With a low-resolution
    step, the first epochs cost that step instead: `low_res_fraction` of them, rounded
    down, or up when only that fits one more epoch."""
    left = budget_s * (1.0 - safety) - setup_s - final_eval_s

    def fits(n: int, small: int) -> bool:
        return (
            _compiles(True, 0, n, small) * compile_s
            + _epochs_s(0, n, steps_per_epoch, step_s, val_eval_s, low_res_step_s, small)
        ) <= left

    return _most_epochs_and_small(0, _small_choices(low_res_step_s, low_res_fraction), fits)


def low_res_note(plan: BudgetPlan) -> str:
    if not plan.low_res_step_s:
        return ''
    return (
        f' ({plan.low_res_step_s:.3f} s at the low size for the first '
        f'{plan.small_epochs}{_rounded_up_note(plan)})'
    )


def _rounded_up_note(plan: BudgetPlan) -> str:
    if plan.small_epochs == low_res_epochs(plan.num_epochs, plan.low_res_fraction):
        return ''
    return (
        f', epochs_fraction {plan.low_res_fraction:g} rounded up: one more small epoch '
        'fits, one more full-size one does not'
    )


def refit_after_epoch(
    plan: BudgetPlan,
    epochs_done: int,
    elapsed_s: float,
    step_s: float,
    val_eval_s: float,
    must_recompile: bool,
    length_matters: bool,
    low_res_step_s: float = 0.0,
    safety: float = SAFETY_FRACTION,
) -> BudgetPlan:
    """The plan refitted from the loop's own measurements after `epochs_done` epochs,
    `elapsed_s` after the trainer started: `step_s`, the full-size step, and with
    low-resolution first epochs `low_res_step_s`, the small one. `must_recompile`: the
    running step was compiled for another length and has to be compiled again whatever
    the refit says (its compile is then charged); `length_matters`: False when the schedule
    is the same for every length, so a new length never costs a compile. Never fewer epochs
    than are done. Pure: in a multi-process run, pass every process the same measurements
    (`agree_measurements`) and they all refit alike."""
    left = plan.budget_s * (1.0 - safety) - elapsed_s - plan.final_eval_s
    low_step_s = low_res_step_s if plan.low_res_step_s else 0.0
    measured = dataclasses.replace(
        plan,
        step_s=step_s,
        low_res_step_s=low_step_s,
        val_eval_s=val_eval_s,
        epochs_done=epochs_done,
        fitted_at_s=elapsed_s,
        calibrated_step_s=plan.calibrated_step_s or plan.step_s,
    )

    def fits(n: int, small: int, new_step: bool) -> bool:
        compiles = _compiles(new_step, epochs_done, n, small)
        return (
            compiles * plan.compile_s
            + _epochs_s(epochs_done, n, plan.steps_per_epoch, step_s, val_eval_s, low_step_s, small)
            <= left
        )

    # Every count of small epochs is >= 1 (low_res_epochs), so the refit after epoch 1
    # keeps that epoch, trained small, counted small.
    choices = _small_choices(low_step_s, plan.low_res_fraction)

    def refitted(new_step: bool, recompiles: bool) -> BudgetPlan:
        n, small = _most_epochs_and_small(epochs_done, choices, lambda n, k: fits(n, k, new_step))
        return dataclasses.replace(
            measured, num_epochs=n, fitted_small_epochs=small, recompiles=recompiles
        )

    if not length_matters:
        return refitted(new_step=False, recompiles=False)
    with_compile = refitted(new_step=True, recompiles=True)
    keep_fits = fits(plan.num_epochs, plan.small_epochs, False)
    if not must_recompile and keep_fits and with_compile.num_epochs <= plan.num_epochs:
        # The running step already has this length, and a new one would not train more.
        return dataclasses.replace(
            measured,
            num_epochs=plan.num_epochs,
            fitted_small_epochs=plan.small_epochs,
            recompiles=False,
        )
    return with_compile


def refit_message(before: BudgetPlan, after: BudgetPlan) -> str:
    """The log line of a refit."""
    step = (
        f"the loop's step took {after.step_s:.3f} s (calibration: {after.calibrated_step_s:.3f} s)"
    )
    if after.low_res_step_s:
        step += (
            f', {after.low_res_step_s:.3f} s at the low size (calibration: '
            f'{before.low_res_step_s:.3f} s)'
        )
    small = (
        f', the first {after.small_epochs} at the low size{_rounded_up_note(after)}'
        if after.small_epochs
        else ''
    )
    return (
        f'Time budget refit after epoch {after.epochs_done}: {step}, validation '
        f'{after.val_eval_s:.1f} s -> {after.num_epochs} epochs (was {before.num_epochs})'
        f'{small}, predicted to end after {after.predicted_s / 60:.1f} min.'
    )


def first_fit(
    budget_minutes: float,
    started: float,
    steps_per_epoch: int,
    run_steps: Callable[[int], list[float]],
    run_validation: Callable[[], None],
    val_examples: int,
    test_examples: int,
    run_low_res_steps: Callable[[int], list[float]] | None = None,
    low_res_fraction: float = 0.0,
) -> BudgetPlan:
    """The first fit, before training: measures and fits. `run_steps(n)` runs n train steps
    on a throwaway state and returns the seconds of each (the first includes compilation);
    `run_validation()` runs one validation pass; `run_low_res_steps`, when the run trains
    its first epochs small, the same at the low size. Raises BudgetTooSmallError if not one
    epoch fits."""
    times = run_steps(1 + CALIBRATION_STEPS)
    compile_s, step_s = times[0], statistics.median(times[1:])
    low_res_step_s = 0.0
    if run_low_res_steps is not None and low_res_fraction > 0:
        low_res_step_s = statistics.median(run_low_res_steps(1 + CALIBRATION_STEPS)[1:])
    else:
        low_res_fraction = 0.0
    run_validation()  # compiles the eval step, which training reuses
    t = time.time()
    run_validation()
    val_eval_s = time.time() - t
    final_eval_s = val_eval_s * (1.0 + test_examples / max(val_examples, 1))
    setup_s = time.time() - started
    budget_s = budget_minutes * 60.0
    epochs, small = _agree(
        *fit_epochs(
            budget_s,
            setup_s,
            compile_s,
            step_s,
            steps_per_epoch,
            val_eval_s,
            final_eval_s,
            low_res_step_s=low_res_step_s,
            low_res_fraction=low_res_fraction,
        )
    )
    plan = BudgetPlan(
        budget_s,
        setup_s,
        compile_s,
        step_s,
        val_eval_s,
        final_eval_s,
        steps_per_epoch,
        epochs,
        calibrated_step_s=step_s,
        low_res_step_s=low_res_step_s,
        low_res_fraction=low_res_fraction,
        fitted_small_epochs=small,
    )
    if epochs < 1:
        raise BudgetTooSmallError(
            f'time_budget_minutes={budget_minutes:g} fits no full epoch on this machine: setup '
            f'took {setup_s:.0f} s, compiling the step {compile_s:.0f} s, and one epoch needs '
            f'{plan.epoch_s:.0f} s ({steps_per_epoch} steps of {step_s:.2f} s plus '
            f'{val_eval_s:.0f} s of validation). Raise time_budget_minutes, or choose a '
            'smaller model or a larger batch_size.'
        )
    log.info(
        'Time budget %.0f min: step %.3f s%s, validation %.1f s, compile %.0f s, setup '
        '%.0f s -> %d epochs, predicted to end after %.1f min.',
        budget_minutes,
        step_s,
        low_res_note(plan),
        val_eval_s,
        compile_s,
        setup_s,
        epochs,
        plan.predicted_s / 60,
    )
    return plan


def agree_measurements(*values: float) -> tuple[float, ...]:
    """Process 0's measurements on every process (unchanged in a single-process run)."""
    if jax.process_count() == 1:
        return values
    import numpy as np
    from jax.experimental import multihost_utils

    agreed = multihost_utils.broadcast_one_to_all(np.asarray(values, np.float32))
    return tuple(float(v) for v in agreed)


def _agree(*counts: int) -> tuple[int, ...]:
    """Every process trains the same length: process 0's measurement decides."""
    return tuple(int(c) for c in agree_measurements(*counts))


def stored_plan(ckpt: Checkpointer) -> BudgetPlan | None:
    """The plan saved with the newest readable checkpoint, if any."""
    for step in sorted(ckpt.all_steps(), reverse=True):
        try:
            _, host = ckpt.read_host(step)
        except CheckpointError:
            continue  # damaged: the restore sets it aside; an older one knows the plan
        saved = host.get('time_budget')
        return BudgetPlan.from_json(saved) if saved else None
    return None


def time_steps(runner: Any, state: Any, data: Any, n: int, size: int | None = None) -> list[float]:
    """Seconds of each of n real train steps on a copy of `state` (the step donates its
    input, and the run must go on from the untouched one), on epoch 0's batches at image
    side `size` (None: the data's own), each waited for."""
    carried = runner.put(jax.tree.map(jnp.copy, state))
    batches = data.epoch(0)
    times = []
    try:
        for k in range(n):
            t = time.time()
            if k and k % data.steps_per_epoch == 0:  # a streamed epoch is read once, in order
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
