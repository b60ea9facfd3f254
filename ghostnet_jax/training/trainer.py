"""One training run, read top to bottom in `Trainer.run`:

    restore_or_start   the run's state: its latest checkpoint, or a fresh one
    fit_length         how many epochs: a stored plan's, a time budget's first fit, the config's
    train_epochs       epochs of steps, validation, callbacks and checkpoints (a time budget
                       refits the length once, after epoch 1)
    finish             the final weights evaluated, results.json

Construction builds (data, model, optimizer, the step, the run record) and neither writes
nor trains. The run's length changes in one place, `set_length`. The loop state (epochs
validated, history, a partial epoch's sums, callbacks, best epoch, why it stopped, the
model spec, a time budget's plan) belongs to the `RunRecord`, which writes it with every
checkpoint, so a resumed run continues exactly and a finished one knows it is finished.

Everything per step stays on device; the host syncs at *sync points* (every
`log_every_steps` steps and at each epoch end, `epoch_loop.run_epoch`) to write logs,
check for a non-finite loss and decide whether to stop. Stopping is decided in exactly
one place, `Trainer._decide`, from the run's position and a preemption flag that every
process agrees on, so all processes of a pod stop at the same step and save together.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from etils import epath

from ghostnet_jax.data.metrics import steps_in_flight
from ghostnet_jax.data.stream import StreamTrainData
from ghostnet_jax.training import steps, time_budget
from ghostnet_jax.training.callbacks import callbacks_from_config
from ghostnet_jax.training.checkpoints import CheckpointError
from ghostnet_jax.training.epoch_loop import run_epoch
from ghostnet_jax.training.evaluation import evaluator
from ghostnet_jax.training.experiment import build_experiment, with_schedule_length
from ghostnet_jax.training.grad_health import GradientHealth
from ghostnet_jax.training.loop_state import (
    COMPLETED,
    EARLY_STOPPING,
    FINISHED_KINDS,
    MAX_STEPS,
    PREEMPTED,
    LoopState,
    NonFiniteLossError,
)
from ghostnet_jax.training.low_res import low_res_epochs, train_image_size
from ghostnet_jax.training.metrics_log import Progress
from ghostnet_jax.training.model_spec import ModelSpec, spec_from_training
from ghostnet_jax.training.optim import get_lr_scale, length_free_steps, set_lr_scale
from ghostnet_jax.training.parallel import DataParallelStep, make_mesh
from ghostnet_jax.training.preemption import Preemption
from ghostnet_jax.training.resume_checks import check_resume, run_identity, written_before_release
from ghostnet_jax.training.run_record import RunRecord, epoch_record
from ghostnet_jax.training.state import eval_variables
from ghostnet_jax.training.time_budget import BudgetPlan

log = logging.getLogger(__name__)

# The spec fields that say the training data itself changed (the rest is the model,
# which the identity check covers).
_DATA_SPEC_FIELDS = ('class_names', 'image_shape', 'mean', 'std', 'resize')
# A CPU run projected to take longer than this is told about configs/cpu_hour.py.
_LONG_CPU_RUN_S = 3 * 3600
# What on_sync answers where the loop pauses to save (checkpoint.every_steps, or a save
# that failed in the background).
_SAVE_POINT = 'save point'


def long_cpu_run_note(step_s: float, steps_left: int, num_epochs: int) -> str | None:
    """What a CPU run sized for an accelerator is told after its first timed steps: how
    long the rest takes at this speed, and the CPU recipe (None for a run under ~3 h)."""
    left_s = step_s * steps_left
    if left_s < _LONG_CPU_RUN_S:
        return None
    return (
        f'At {step_s:.2f} s per step on this CPU, the {steps_left} steps left '
        f'({num_epochs} epochs) will take about {left_s / 3600:.0f} hours, validation not '
        'counted. The CPU recipe is configs/cpu_hour.py, the default fitted to one hour: '
        'python -m ghostnet_jax.train --config configs/cpu_hour.py (docs/training.md).'
    )


def nonfinite_message(bad: int, steps_per_epoch: int, latest: int | None, directory) -> str:
    """What a run whose loss became NaN/inf is told: `bad` updates were applied before the
    bad loss, `latest` is the last finished checkpoint (None: none was saved yet)."""
    kept = (
        f'Last good checkpoint: step {latest} in {directory}; rerun to resume from it'
        if latest is not None
        else 'No checkpoint was saved before it (the run stopped in its first epoch), so the '
        'rerun starts over'
    )
    # `bad` counts the updates before the bad loss; the logs (metrics.jsonl, TensorBoard)
    # label that loss with step bad + 1, so name it the same way.
    return (
        f'Loss is not finite at step {bad + 1} (epoch {bad // steps_per_epoch + 1}); no '
        f'update was applied from that step on. {kept} with a lower '
        'optimizer.learning_rate or with optimizer.grad_clip_norm set.'
    )


def make_runner(experiment, mesh, config: ml_collections.ConfigDict) -> DataParallelStep:
    """The train step of an experiment as the trainer runs it (compiled at its first call)."""
    step_fn = functools.partial(
        steps.train_step,
        model=experiment.model,
        tx=experiment.tx,
        schedule=experiment.schedule,
        seed=config.seed,
        label_smoothing=config.label_smoothing,
        ema_decay=config.ema_decay,
    )
    return DataParallelStep(step_fn, mesh, config.parallel)


class Trainer:
    """One run in one workdir; `run()` trains (or resumes, or only finishes) and returns
    the results. Nothing here is specific to one process or device count."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str | Path | epath.Path,
        preemption: Preemption | None = None,
        splits: dict | None = None,
    ):
        """Builds the run. `splits` (in-memory data, e.g. the benchmark's synthetic images)
        replaces config.data."""
        self.config = config
        self.preemption = preemption or Preemption()
        self.workdir = epath.Path(workdir)  # local folders and gs:// alike
        self.started = time.time()
        self.mesh = make_mesh()
        log.info(
            'Devices: %d (%s), processes: %d',
            self.mesh.size,
            jax.default_backend(),
            jax.process_count(),
        )
        self.experiment = build_experiment(config, self.mesh, splits)
        data = self.experiment.train_data
        self.steps_per_epoch = data.steps_per_epoch
        self.spec = spec_from_training(
            config, self.experiment.class_names, data.image_shape, data.mean, data.std
        )
        # Only now: a run that cannot get its data leaves no empty workdir behind.
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A streamed run saves its input iterator's state with every checkpoint.
        self.record = RunRecord(
            self.workdir, config, self.spec, iterator_state=isinstance(data, StreamTrainData)
        )
        self.ckpt = self.record.ckpt
        self.evaluate = evaluator(
            self.experiment.model,
            len(self.experiment.class_names),
            flip=config.get('eval_flip', False),
        )
        self.early_stopping, self.plateau = callbacks_from_config(config.callbacks)
        self.runner = make_runner(self.experiment, self.mesh, config)
        self.runner_epochs = config.num_epochs  # the length the runner's schedule spans
        self.grad_health = GradientHealth()
        self.progress = Progress(self.steps_per_epoch, config.num_epochs, config.batch_size)
        self.state = self.experiment.state
        self.step = 0  # steps trained (host count; state.step agrees)
        self.budget: BudgetPlan | None = None
        self.num_epochs = self.full_length = self.total_steps = 0  # set_length sets them
        self._restored_num_epochs: int | None = None
        self._carried = None  # the runner's state while training (donated each step)
        self._max_in_flight = steps_in_flight()  # 0: each step waits for its inputs
        self._window_start = time.time()
        self._last_metrics: dict = {}
        self._size: int | None = None  # the image side the last epoch trained at
        self._batches = None  # the epoch being trained (its iterator state is saved)
        self._iterator_state: dict | None = None  # restored with the checkpoint
        self._speed_told = jax.default_backend() != 'cpu' or bool(config.get('time_budget_minutes'))
        self._first_step_done: tuple[int, int, float] | None = None  # (epoch, done, time)

    # ------------------------------------------------------------------ phases
    def run(self) -> dict:
        with self.ckpt:
            self.restore_or_start()
            self.fit_length()
            results_path = self.workdir / 'results.json'
            if not self.goes_on() and results_path.exists():
                log.info(
                    'This run is finished (%s); its results are in %s. Use a new --workdir '
                    'or a larger num_epochs to train more.',
                    self.record.loop.stop_reason,
                    results_path,
                )
                return json.loads(results_path.read_text())
            self.record.open()
            self.train_epochs()
            return self.finish()

    def restore_or_start(self) -> None:
        """The latest intact checkpoint and its loop state, or a fresh loop state. A resume
        that would continue another experiment fails before anything is written."""
        if self.ckpt.latest_step() is None:
            self.record.start()
            return
        self._refuse_another_experiment()
        state, host = self.ckpt.restore_latest_intact(self.experiment.state, mesh=self.mesh)
        loop = LoopState.from_json(host)
        self._check_resume(loop)  # the one restored, if the latest was set aside
        self.state, self.step = state, int(jax.device_get(state.step))
        self._restored_num_epochs = loop.num_epochs
        self.record.resume(loop, self.step)
        if self.early_stopping and loop.early_stopping:
            self.early_stopping.load_state_dict(loop.early_stopping)
        if self.plateau and loop.plateau:
            self.plateau.load_state_dict(loop.plateau)
        self._iterator_state = self.ckpt.read_iterator_state(self.step)
        log.info('Resumed from step %d (%d epochs evaluated)', self.step, loop.evaluated_epochs)

    def fit_length(self) -> None:
        """How many epochs this run trains: the plan a time-budgeted run stored; for a new
        budgeted run, the budget's first fit (it times real steps and a validation pass);
        otherwise num_epochs."""
        config, loop = self.config, self.record.loop
        budget = config.get('time_budget_minutes')
        stored = BudgetPlan.from_json(loop.time_budget) if loop.time_budget else None
        if stored is not None:
            if budget and abs(stored.budget_s - budget * 60.0) > 1e-6:
                log.warning(
                    'time_budget_minutes is now %g, but this run was fitted to %g min '
                    '(%d epochs) when it started; it keeps that length. Use a new '
                    '--workdir to fit another budget.',
                    budget,
                    stored.budget_s / 60,
                    stored.num_epochs,
                )
            self.set_length(stored.num_epochs, stored)
        elif budget and self.step:
            log.warning(
                'time_budget_minutes=%g is ignored: this run started without a budget, '
                'and refitting its length now would change its schedule mid-run. It '
                'keeps num_epochs=%d; use a new --workdir for a budgeted run.',
                budget,
                config.num_epochs,
            )
            self.set_length(config.num_epochs)
        elif budget:
            plan = self._first_fit(budget)
            log.info(
                'num_epochs=%d comes from time_budget_minutes (the config says %d; set '
                'time_budget_minutes=0 to train that).',
                plan.num_epochs,
                config.num_epochs,
            )
            # When the first epoch's learning rates are the same for every length (warmup
            # spans it), it trains on the step the calibration compiled, and the refit
            # after it compiles the one step the run keeps.
            self.set_length(
                plan.num_epochs,
                plan,
                now=length_free_steps(config.optimizer, self.steps_per_epoch)
                < self.steps_per_epoch,
            )
        else:
            self.set_length(config.num_epochs)

    def goes_on(self) -> bool:
        """Whether the restored run trains on: preempted, or stopped at a num_epochs or
        max_steps that has grown since; False for a run that finished."""
        loop = self.record.loop
        if loop.stop_kind == PREEMPTED:
            self.record.set_stop(None)
        elif loop.stop_kind == COMPLETED and self.step < self.total_steps:
            log.warning(
                'num_epochs grew from %s to %d: training on; the schedule now spans '
                'the new length.',
                self._restored_num_epochs,
                self.num_epochs,
            )
            self.record.set_stop(None)
        elif loop.stop_kind == MAX_STEPS and self.step < self.total_steps:
            log.info('max_steps grew: training on from step %d to %d.', self.step, self.total_steps)
            self.record.set_stop(None)
        return loop.stop_kind not in FINISHED_KINDS

    def train_epochs(self) -> None:
        """Trains until `_decide` names a reason to stop, and saves there. A run whose
        training finished before (stopped after its last epoch) only finishes."""
        if self.record.loop.stop_kind is not None:
            return
        self.begin_training()
        kind = None
        epoch = self.record.loop.evaluated_epochs
        while epoch < self.num_epochs:  # the refit after the first epoch may change it
            kind = self.train_epoch_steps(epoch)
            if kind is None:
                kind = self._end_epoch(epoch)
            else:  # stopped within the epoch (preempted, or max_steps)
                self._stop_within_epoch(kind, epoch)
            if kind is not None:
                break
            epoch += 1
        if kind is None:  # nothing left to train (e.g. resumed after the last epoch)
            self._sync_state()
            self._set_stop(self._decide() or COMPLETED)
            self._save()

    def finish(self) -> dict:
        """Waits for the last checkpoint (saving it again if it failed in the background);
        a preempted run returns there, a finished one evaluates its final weights."""
        failed = self.ckpt.wait_until_finished()
        if failed is not None:
            self.record.save_again(
                failed,
                self.step,
                self.synced_state(),
                self._batches.state() if self._batches else None,
            )
            self.ckpt.wait_until_finished()
        if self.record.loop.stop_kind == PREEMPTED or self.preemption.agreed():
            self.record.close()
            where = (
                'training finished; the final evaluation'
                if self.record.loop.stop_kind in FINISHED_KINDS
                else 'training'
            )
            log.warning(
                'Stopped: preempted (SIGTERM) at step %d. Rerun with the same '
                '--workdir to resume %s.',
                self.step,
                where,
            )
            return {'status': 'preempted', 'step': self.step}
        return self.record.finish(self.experiment, self.evaluate, time.time() - self.started)

    # ------------------------------------------------------------- the length
    def set_length(self, num_epochs: int, plan: BudgetPlan | None = None, now: bool = True) -> None:
        """The run's length, and the plan it comes from: the loop's bounds, the record, the
        progress line and the step's schedule. The step is rebuilt for a new length when
        its learning rates depend on it (`now`=False keeps the running one until the next
        call, for steps that are the same for every length)."""
        self.num_epochs = num_epochs
        self.full_length = self.steps_per_epoch * num_epochs
        self.total_steps = min(self.full_length, self.config.max_steps or self.full_length)
        self.budget = plan
        self.record.set_length(num_epochs, plan.to_json() if plan else None)
        self.progress.num_epochs = num_epochs
        if now and self._length_matters() and num_epochs != self.runner_epochs:
            self.experiment = with_schedule_length(self.experiment, num_epochs)
            self.runner = make_runner(self.experiment, self.mesh, self.config)
            self.runner_epochs = num_epochs
            if self._carried is not None:
                self._carried = self.runner.put(self.state)

    def _length_matters(self) -> bool:
        return not math.isinf(length_free_steps(self.config.optimizer, self.steps_per_epoch))

    def _first_fit(self, budget_minutes: float) -> BudgetPlan:
        """The time budget's first fit: real steps on a copy of the initial state (with
        low-resolution first epochs, at both sizes) and a real validation pass."""
        experiment = self.experiment
        data, state = experiment.train_data, experiment.state
        low_res = self.config.data.get('low_res')
        low_size = low_res.size if low_res and low_res.size else None
        test = experiment.test_data.num_examples if experiment.test_data is not None else 0
        return time_budget.first_fit(
            budget_minutes,
            self.started,
            self.steps_per_epoch,
            run_steps=lambda n: time_budget.time_steps(self.runner, state, data, n),
            run_validation=lambda: self.evaluate(eval_variables(state), experiment.val_data),
            val_examples=experiment.val_data.num_examples,
            test_examples=test,
            run_low_res_steps=(
                (lambda n: time_budget.time_steps(self.runner, state, data, n, low_size))
                if low_size
                else None
            ),
            low_res_fraction=low_res.epochs_fraction if low_size else 0.0,
        )

    def _refit_budget(self, val_eval_s: float) -> None:
        """The time budget's refit after the first epoch, from that epoch as the loop ran it
        (a low-res run also times the full-size step now)."""
        step_s = self._epoch.seconds_per_step()
        low_res_step_s = 0.0
        if self.budget.low_res_step_s:  # the epoch trained small: time the full size now
            low_res_step_s = step_s
            step_s = time_budget.full_size_step_s(
                self.runner, self.state, self.experiment.train_data
            )
        elapsed_s, step_s, low_res_step_s, val_eval_s = time_budget.agree_measurements(
            time.time() - self.started, step_s, low_res_step_s, val_eval_s
        )
        plan = time_budget.refit_after_epoch(
            self.budget,
            1,
            elapsed_s,
            step_s,
            val_eval_s,
            must_recompile=self.runner_epochs != self.budget.num_epochs,
            length_matters=self._length_matters(),
            low_res_step_s=low_res_step_s,
        )
        log.info(time_budget.refit_message(self.budget, plan))
        self.set_length(plan.num_epochs, plan)

    # ------------------------------------------------------------------ epochs
    def begin_training(self) -> None:
        """Places the state for the runner: the loop (or a benchmark) trains from here."""
        self._carried = self.runner.put(self.state)
        self._window_start = time.time()

    def train_epoch_steps(self, epoch: int) -> str | None:
        """The steps of epoch `epoch` from where the run is, as the loop runs them (what the
        benchmark times as a real epoch); returns why it stopped inside the epoch, if it did."""
        data, steps_per_epoch = self.experiment.train_data, self.steps_per_epoch
        self.record.start_epoch(epoch)
        self.progress.start_epoch(epoch + 1)
        self._epoch_started = time.time()
        first = self.step - epoch * steps_per_epoch
        stop = min(steps_per_epoch, self.total_steps - epoch * steps_per_epoch)
        # A restored iterator state serves the first epoch trained after the restore only.
        self._batches = batches = data.epoch(epoch, first, self._iterator_state)
        self._iterator_state = None
        size = self._train_size(epoch)
        if size != self._size:
            log.info(
                'Epoch %d on: training images %s (data.low_res: the first %d of %d '
                'epochs train small).',
                epoch + 1,
                f'{size}x{size}' if size else 'at full size',
                self._small_epochs(),
                self.num_epochs,
            )
            self._size = size

        def on_sync(done: int, fetched: list[dict], last: bool) -> str | None:
            self.step = epoch * steps_per_epoch + done
            self._flush(fetched)
            self._tell_speed_once(epoch, done)
            if last:
                return None
            every = self.ckpt.every_steps
            return self._decide() or (
                _SAVE_POINT if (every and self.step % every == 0) or self._save_failed() else None
            )

        try:
            while True:
                self._epoch = run_epoch(
                    self.runner,
                    self._carried,
                    lambda k: data.batch(batches, k, size=size),
                    first,
                    stop,
                    sync_every=self.config.log_every_steps,
                    steps_before=epoch * steps_per_epoch,
                    max_in_flight=self._max_in_flight,
                    on_sync=on_sync,
                    on_step=lambda done: self._on_step(epoch, done),
                )
                self._carried = self._epoch.carried
                if self._epoch.stop != _SAVE_POINT:
                    break
                # A checkpoint inside the epoch, then on from there.
                self._sync_state()
                self._save()
                first = self._epoch.steps_done
        finally:
            batches.close()
        if self._epoch.stop:
            return self._epoch.stop
        if stop < steps_per_epoch:  # max_steps ends this epoch early
            return self._decide()
        return None

    def _end_epoch(self, epoch: int) -> str | None:
        """Validation, the budget's refit after epoch 1, callbacks, the stop decision and
        the checkpoint of a full epoch."""
        self._sync_state()
        val_started = time.time()
        val = self.evaluate(eval_variables(self.state), self.experiment.val_data)
        val_eval_s = time.time() - val_started
        if self.budget and not self.budget.refitted and epoch == 0:
            self._refit_budget(val_eval_s)
        record = epoch_record(
            epoch + 1,
            self.step,
            self.record.loop.epoch_sums,
            val,
            get_lr_scale(self.state.opt_state),
            time.time() - self._epoch_started,
        )
        if self.plateau:
            decision = self.plateau.update(
                epoch, record, base_lr=float(self.experiment.schedule(self.step))
            )
            if decision.reduced:
                self.state = self.state.replace(
                    opt_state=set_lr_scale(self.state.opt_state, decision.scale)
                )
                self._carried = self.runner.put(self.state)
                self.state = self.runner.get(self._carried)
                log.info('Plateau: learning-rate scale -> %g', decision.scale)
        early_stop = bool(self.early_stopping and self.early_stopping.update(epoch, record).stop)
        improved = self.record.end_epoch(
            record, self._train_size(epoch) or self.experiment.train_data.image_shape[0]
        )
        kind = self._decide(early_stop=early_stop)
        self._set_stop(kind, epoch)
        if self.ckpt.should_save(epoch + 1, self.num_epochs) or improved or kind:
            self._save(record, improved)
        self.progress.write(
            f'epoch {epoch + 1}/{self.num_epochs}: train loss {record["train_loss"]:.4f} acc '
            f'{record["train_accuracy"]:.4f} | val loss {val["loss"]:.4f} acc '
            f'{val["accuracy"]:.4f} ({val["num_examples"]} examples) | '
            f'{record["epoch_time_s"]:.0f} s'
        )
        return kind

    def _stop_within_epoch(self, kind: str, epoch: int) -> None:
        """Saves where the loop stopped inside an epoch. At max_steps the weights are also
        validated, so they can compete for the final evaluation; a preempted run resumes
        here and validates the epoch when it completes it."""
        self._sync_state()
        self._set_stop(kind, epoch)
        if kind == PREEMPTED:
            self._save()
            return
        val = self.evaluate(eval_variables(self.state), self.experiment.val_data)
        train_loss, train_acc = self.record.loop.epoch_sums.means()
        record = {
            'epoch': epoch + 1,
            'step': self.step,
            'train_loss': float(train_loss),
            'train_accuracy': float(train_acc),
            'val_accuracy': val['accuracy'],
            'val_loss': val['loss'],
            'partial_epoch': True,
        }
        self._save(record, self.record.rank(record))

    def _small_epochs(self) -> int:
        """How many of the first epochs train at data.low_res.size."""
        if self.budget and self.budget.low_res_step_s:
            return self.budget.small_epochs
        low_res = self.config.data.get('low_res')
        return low_res_epochs(self.num_epochs, low_res.epochs_fraction) if low_res else 0

    def _train_size(self, epoch: int) -> int | None:
        """The image side epoch `epoch` trains at (None: the data's own)."""
        return train_image_size(
            self.config.data.get('low_res'), epoch, self.num_epochs, self._small_epochs()
        )

    # ------------------------------------------------------------- resume checks
    def _refuse_another_experiment(self) -> None:
        """A resume that would continue another experiment fails here, before the workdir
        is touched. (A damaged latest checkpoint is checked after the fallback restore.)"""
        try:
            _, host = self.ckpt.read_host('latest')
        except CheckpointError:
            return
        self._check_resume(LoopState.from_json(host), warn=False)  # warned after the restore

    def _check_resume(self, loop: LoopState, warn: bool = True) -> None:
        identity = run_identity(self.config)
        written_before_release(
            loop.identity, identity, loop.time_budget, BudgetPlan.fields(), self.workdir
        )
        stored = ModelSpec.from_json(loop.model_spec) if loop.model_spec else None
        changed = [
            d
            for d in (stored.differences(self.spec) if stored else [])
            if d.split(':')[0] in _DATA_SPEC_FIELDS
        ]
        check_resume(loop.identity, identity, changed, warn=warn, budgeted=bool(loop.time_budget))

    # ----------------------------------------------------------- the one stop rule
    def _decide(self, early_stop: bool = False) -> str | None:
        """Why training stops now, or None. Called at sync points only, which are the
        same steps on every process, so every process returns the same answer. A run that
        is done anyway stops as done (a SIGTERM then only skips the final evaluation,
        which the rerun does)."""
        preempted = self.preemption.agreed()  # collective: every process calls it here
        if early_stop:
            return EARLY_STOPPING
        if self.step >= self.total_steps:
            return COMPLETED if self.total_steps == self.full_length else MAX_STEPS
        return PREEMPTED if preempted else None

    def _set_stop(self, kind: str | None, epoch: int | None = None) -> None:
        reason = {
            None: None,
            COMPLETED: 'completed',
            MAX_STEPS: f'max_steps={self.config.max_steps} reached',
            EARLY_STOPPING: f'early stopping at epoch {(epoch or 0) + 1}',
            PREEMPTED: f'preempted (SIGTERM) at step {self.step}',
        }[kind]
        self.record.set_stop(kind, reason)
        if kind == PREEMPTED:
            log.warning('Stopping: %s', reason)

    # -------------------------------------------------------------- host syncs
    def synced_state(self):
        """The train state as the last dispatched step leaves it (waits for nothing)."""
        self._sync_state()
        return self.state

    def _sync_state(self) -> None:
        self.state = self.runner.get(self._carried) if self._carried is not None else self.state

    def _flush(self, fetched: list[dict]) -> None:
        """Writes a window's metrics, adds them to the epoch's sums and checks that the
        loss stayed finite."""
        first = self.step - len(fetched)
        self.record.write_steps(first, fetched, self.steps_per_epoch)
        for i, m in enumerate(fetched):
            for warning in self.grad_health.update(first + i + 1, m):
                log.warning('Gradient health: %s', warning)
        now = time.time()
        ips = len(fetched) * self.config.batch_size / max(now - self._window_start, 1e-9)
        self.record.writer.write_scalars(self.step, {'images_per_second': ips}, 'train')
        self._window_start = now
        self._last_metrics = fetched[-1]
        # The step skips the update of a non-finite loss and records it (state.nonfinite_step);
        # the loss it reports is the one it tested.
        bad = next(
            (first + i for i, m in enumerate(fetched) if not np.isfinite(float(m['loss']))), None
        )
        if bad is not None:
            self.ckpt.wait_until_finished()
            raise NonFiniteLossError(
                nonfinite_message(
                    bad, self.steps_per_epoch, self.ckpt.latest_step(), self.ckpt.directory
                )
            )

    def _save_failed(self) -> bool:
        """Whether the last checkpoint failed in the background (checked at sync points, so
        that the run is protected again at once: the loop saves here). One-process runs
        only: the processes of a multi-process run would not see a failure at the same
        sync point, and they save together; theirs is reported at their next save."""
        return jax.process_count() == 1 and self.ckpt.failed_save() is not None

    def _save(self, metrics: dict | None = None, new_best: bool = False) -> None:
        self.record.set_callbacks(
            self.early_stopping.state_dict() if self.early_stopping else None,
            self.plateau.state_dict() if self.plateau else None,
        )
        self.record.save(
            self.step,
            self.state,
            metrics,
            new_best,
            iterator_state=self._batches.state() if self._batches else None,
        )

    # ------------------------------------------------------------ progress lines
    def _tell_speed_once(self, epoch: int, done: int) -> None:
        """On CPU, once some steps after the first (which compiles) are timed: how long
        this run will take at this speed, and the CPU recipe when that is long (the
        default config is sized for a GPU or TPU)."""
        timed = self._first_step_done
        if self._speed_told or timed is None or timed[0] != epoch or done - timed[1] < 10:
            return
        self._speed_told = True
        step_s = (time.time() - timed[2]) / (done - timed[1])
        note = long_cpu_run_note(step_s, self.total_steps - self.step, self.num_epochs)
        if note:
            log.warning(note)

    def _on_step(self, epoch: int, done: int) -> None:
        timed = self._first_step_done
        if not self._speed_told and (timed is None or timed[0] != epoch):
            self._first_step_done = (epoch, done, time.time())  # after this epoch's first step
        self.progress.update(done, self._last_metrics)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path | epath.Path) -> dict:
    """Trains per `config` in `workdir` (resuming if it holds checkpoints); returns results.
    SIGTERM is honoured from here on, data loading and compilation included."""
    with Preemption() as preemption:
        return Trainer(config, workdir, preemption).run()
