"""The training loop, in phases: set up -> restore or start -> train epochs -> evaluate
the final weights.

Everything per step stays on device; the host syncs at *sync points* (every
`log_every_steps` steps and at each epoch end, `epoch_loop.run_epoch`) to write logs,
check for a non-finite loss and decide whether to stop. Stopping is decided in exactly
one place, `Trainer._decide`, from the loop's state and a preemption flag that every
process agrees on, so all processes of a pod stop at the same step and save together.
What the loop knows (epochs validated, history, the running sums of a partial epoch,
callback state, the best epoch, why it stopped, the model spec, a time budget's plan) is
a `LoopState` saved with every checkpoint (`run_record.RunRecord`), so a resumed run
continues exactly and a finished one knows it is finished.
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

from ghostnet_jax.data.metrics import ExactEvaluator, steps_in_flight
from ghostnet_jax.data.stream import StreamTrainData
from ghostnet_jax.study.grad_health import GradientHealth
from ghostnet_jax.training import steps
from ghostnet_jax.training.budget_fit import BudgetPlan, refit_after_epoch, refit_message
from ghostnet_jax.training.callbacks import callbacks_from_config
from ghostnet_jax.training.checkpoints import CheckpointError
from ghostnet_jax.training.config_checks import (check_batch_sizes, check_low_res_size,
                                                 check_parallel)
from ghostnet_jax.training.epoch_loop import EpochRun, run_epoch
from ghostnet_jax.training.experiment import build_experiment, with_schedule_length
from ghostnet_jax.training.loop_state import (COMPLETED, EARLY_STOPPING, FINISHED_KINDS,
                                              MAX_STEPS, PREEMPTED, BestSoFar, EpochSums,
                                              LoopState, NonFiniteLossError)
from ghostnet_jax.training.low_res import low_res_epochs, train_image_size
from ghostnet_jax.training.metrics_log import Progress, flat_scalars
from ghostnet_jax.training.model_spec import ModelSpec, spec_from_training
from ghostnet_jax.training.optim import get_lr_scale, length_free_steps, set_lr_scale
from ghostnet_jax.training.parallel import DataParallelStep, make_mesh
from ghostnet_jax.training.preemption import Preemption
from ghostnet_jax.training.environment import compute_setup
from ghostnet_jax.training.resume_checks import check_resume, compute_change, run_identity
from ghostnet_jax.training.run_record import RunRecord, epoch_record
from ghostnet_jax.training.state import eval_variables
from ghostnet_jax.training.time_budget import agree_measurements, fit_to_budget, full_size_step_s

log = logging.getLogger(__name__)

# The spec fields that say the training data itself changed (the rest is the model,
# which the identity check covers).
_DATA_SPEC_FIELDS = ('class_names', 'image_shape', 'mean', 'std', 'resize')
# A CPU run projected to take longer than this is told about configs/cpu_hour.py.
_LONG_CPU_RUN_S = 3 * 3600
# What on_sync answers at a checkpoint.every_steps step: the loop pauses there to save.
_SAVE_POINT = 'save point'


def long_cpu_run_note(step_s: float, steps_left: int, num_epochs: int) -> str | None:
    """What a CPU run sized for an accelerator is told after its first timed steps: how
    long the rest takes at this speed, and the CPU recipe (None for a run under ~3 h)."""
    left_s = step_s * steps_left
    if left_s < _LONG_CPU_RUN_S:
        return None
    return (f'At {step_s:.2f} s per step on this CPU, the {steps_left} steps left '
            f'({num_epochs} epochs) will take about {left_s / 3600:.0f} hours, validation not '
            'counted. The CPU recipe is configs/cpu_hour.py, the default fitted to one hour: '
            'python -m ghostnet_jax.train --config configs/cpu_hour.py (docs/training.md).')


def nonfinite_message(bad: int, steps_per_epoch: int, latest: int | None, directory) -> str:
    """What a run whose loss became NaN/inf is told: `bad` updates were applied before the
    bad loss, `latest` is the last finished checkpoint (None: none was saved yet)."""
    kept = (f'Last good checkpoint: step {latest} in {directory}; rerun to resume from it'
            if latest is not None else
            'No checkpoint was saved before it (the run stopped in its first epoch), so the '
            'rerun starts over')
    # `bad` counts the updates before the bad loss; the logs (metrics.jsonl, TensorBoard)
    # label that loss with step bad + 1, so name it the same way.
    return (f'Loss is not finite at step {bad + 1} (epoch {bad // steps_per_epoch + 1}); no '
            f'update was applied from that step on. {kept} with a lower '
            'optimizer.learning_rate or with optimizer.grad_clip_norm set.')


def Evaluator(model, num_classes: int, flip: bool = False) -> ExactEvaluator:
    """The project's one evaluator applied to `model` in eval mode (`flip`: average with
    the mirrored images, config.eval_flip)."""
    return ExactEvaluator(functools.partial(steps.eval_logits, model=model, flip=flip),
                          num_classes)


def make_runner(exp, mesh, config: ml_collections.ConfigDict) -> DataParallelStep:
    """The compiled train step of an experiment, as the trainer runs it."""
    step_fn = functools.partial(
        steps.train_step, model=exp.model, tx=exp.tx, schedule=exp.schedule,
        seed=config.seed, label_smoothing=config.label_smoothing, ema_decay=config.ema_decay)
    return DataParallelStep(step_fn, mesh, config.parallel)


class Trainer:
    """One run in one workdir. `run()` trains (or resumes, or only finishes) and returns
    the results; nothing here is specific to one process or device count."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path | epath.Path,
                 preemption: Preemption | None = None, splits: dict | None = None):
        self.config = config
        self.preemption = preemption or Preemption()
        self.workdir = epath.Path(workdir)   # local folders and gs:// alike
        self.mesh = make_mesh()
        check_batch_sizes(config, self.mesh.size)
        check_parallel(config, jax.process_count())
        log.info('Devices: %d (%s), processes: %d', self.mesh.size, jax.default_backend(),
                 jax.process_count())
        self._started = time.time()
        # `splits` (in-memory data, e.g. the benchmark's synthetic images) replaces config.data.
        self.exp = exp = build_experiment(config, self.mesh, splits)
        check_low_res_size(config, exp.train_data.image_shape)
        # Only now: a run that cannot get its data leaves no empty workdir behind.
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.spec = spec_from_training(config, exp.class_names, exp.train_data.image_shape,
                                       exp.train_data.mean, exp.train_data.std)
        # A streamed run saves its input iterator's state with every checkpoint.
        self.record = RunRecord(self.workdir, config, self.spec,
                                iterator_state=isinstance(exp.train_data, StreamTrainData))
        self.ckpt = self.record.ckpt
        self.evaluator = Evaluator(exp.model, len(exp.class_names),
                                   flip=config.get('eval_flip', False))
        self.budget: BudgetPlan | None = None
        calibrated_runner = None
        self.num_epochs = config.num_epochs
        if config.get('time_budget_minutes'):
            self.exp, self.budget, calibrated_runner = fit_to_budget(
                config.time_budget_minutes, exp, self.ckpt, self._started, self._make_runner,
                self.evaluator)
            if self.budget:
                self.num_epochs = self.budget.num_epochs
                log.info('num_epochs=%d comes from time_budget_minutes (the config says %d; '
                         'set time_budget_minutes=0 to train that).', self.num_epochs,
                         config.num_epochs)
        # The length the running step's schedule spans (a budgeted run's first epoch may
        # run on the calibration's step, compiled for the config's num_epochs).
        self._runner_num_epochs = config.num_epochs if calibrated_runner else self.num_epochs
        self.spe = self.exp.train_data.steps_per_epoch
        self._set_length(self.num_epochs)
        self.early_stopping, self.plateau = callbacks_from_config(config.callbacks)
        self.runner = calibrated_runner or self._make_runner(self.exp)
        self._refuse_another_experiment()   # before anything is written to the workdir
        self.record.open()
        self.progress = Progress(self.spe, self.num_epochs, config.batch_size)
        self.grad_health = GradientHealth()
        self.state = self.exp.state
        self._carried = None          # the runner's state while training (donated each step)
        self._max_in_flight = steps_in_flight()   # 0: each step waits for its inputs
        self._window_start = time.time()
        self._last_metrics: dict = {}
        self._step = 0                # steps trained (host count; state.step agrees)
        self._size: int | None = None   # the image side the last epoch trained at
        self._batches = None          # the epoch being trained (its iterator state is saved)
        self._iterator_state: dict | None = None   # restored with the checkpoint
        self._speed_told = jax.default_backend() != 'cpu' or bool(self.budget)
        self._first_step_done: tuple[int, int, float] | None = None   # (epoch, done, time)

    @property
    def loop(self) -> LoopState:
        return self.record.loop

    def _make_runner(self, exp) -> DataParallelStep:
        return make_runner(exp, self.mesh, self.config)

    def _set_length(self, num_epochs: int) -> None:
        self.num_epochs = num_epochs
        self.full_length = self.spe * num_epochs
        self.total_steps = min(self.full_length, self.config.max_steps or self.full_length)

    # ------------------------------------------------------------------ phases
    def run(self) -> dict:
        preemption = self.preemption
        with self.ckpt:
            self._restore_or_start()
            results_path = self.workdir / 'results.json'
            if self.loop.stop_kind in FINISHED_KINDS and results_path.exists():
                log.info('This run is finished (%s); its results are in %s. Use a new --workdir '
                         'or a larger num_epochs to train more.', self.loop.stop_reason,
                         results_path)
                self.record.close()
                return json.loads(results_path.read_text())
            if self.loop.stop_kind is None:
                self._train(preemption)
            failed = self.ckpt.wait_until_finished()
            if failed is not None:   # the last save failed in the background: once more
                self.record.save_again(failed, self._step, self.synced_state(),
                                       self._batches.state() if self._batches else None)
                self.ckpt.wait_until_finished()
            if self.loop.stop_kind == PREEMPTED or preemption.agreed():
                self.record.close()
                where = ('training finished; the final evaluation'
                         if self.loop.stop_kind in FINISHED_KINDS else 'training')
                log.warning('Stopped: preempted (SIGTERM) at step %d. Rerun with the same '
                            '--workdir to resume %s.', self._step, where)
                return {'status': 'preempted', 'step': self._step}
            return self.record.finish(self.exp, self.evaluator, time.time() - self._started)

    def _restore_or_start(self) -> None:
        config = self.config
        if self.ckpt.latest_step() is None:
            self.record.start(self.num_epochs, self.budget.to_json() if self.budget else None)
            self.record.writer.write_hparams(flat_scalars(config.to_dict()), {})
            return
        state, host = self.ckpt.restore_latest_intact(self.exp.state, mesh=self.mesh)
        loop = LoopState.from_json(host)
        self._check_resume(loop)
        if self.early_stopping and loop.early_stopping:
            self.early_stopping.load_state_dict(loop.early_stopping)
        if self.plateau and loop.plateau:
            self.plateau.load_state_dict(loop.plateau)
        if loop.best is None or (loop.best.metric, loop.best.mode) != (self.record.rule.metric,
                                                                     self.record.rule.mode):
            loop.best = BestSoFar(self.record.rule.metric, self.record.rule.mode,
                                  min_delta=self.record.best_delta())
            for record in loop.history:
                loop.best.update(record)
        self.state, self.record.loop = state, loop
        self._step = step = int(jax.device_get(state.step))
        self._iterator_state = self.ckpt.read_iterator_state(step)
        log.info('Resumed from step %d (%d epochs evaluated)', step, loop.evaluated_epochs)
        setup = compute_setup()
        change = compute_change(loop.compute, setup, step)
        if change:
            log.warning(change)
        if change or not loop.compute:
            loop.compute.append({'from_step': step, **setup})
        if loop.stop_kind == PREEMPTED:
            loop.stop_kind = loop.stop_reason = None
        elif loop.stop_kind == COMPLETED and step < self.total_steps:
            log.warning('num_epochs grew from %s to %d: training on; the schedule now spans '
                        'the new length.', loop.num_epochs, self.num_epochs)
            loop.stop_kind = loop.stop_reason = None
        elif loop.stop_kind == MAX_STEPS and step < self.total_steps:
            log.info('max_steps grew: training on from step %d to %d.', step, self.total_steps)
            loop.stop_kind = loop.stop_reason = None
        loop.num_epochs, loop.max_steps = self.num_epochs, config.max_steps
        loop.identity, loop.model_spec = run_identity(config), self.spec.to_json()

    def _train(self, preemption: Preemption) -> None:
        """Trains until `_decide` names a reason to stop, and saves there."""
        self.begin_training()
        kind = None
        epoch = self.loop.evaluated_epochs
        while epoch < self.num_epochs:       # a refit after the first epoch may change it
            kind = self.train_epoch_steps(epoch, preemption)
            if kind is None:
                kind = self._end_epoch(epoch, preemption)
            else:   # stopped within the epoch (preempted, or max_steps)
                self._stop_within_epoch(kind, epoch)
            if kind is not None:
                break
            epoch += 1
        if kind is None:    # nothing left to train (e.g. resumed after the last epoch)
            self._sync_state()
            self._set_stop(self._decide(preemption) or COMPLETED)
            self._save()

    def begin_training(self) -> None:
        """Places the state for the runner: the loop (or a benchmark) trains from here."""
        self._carried = self.runner.put(self.state)
        self._window_start = time.time()

    def train_epoch_steps(self, epoch: int, preemption: Preemption | None = None) -> str | None:
        """The steps of epoch `epoch` from where the run is, as the loop runs them (what the
        benchmark times as a real epoch); returns why it stopped inside the epoch, if it did."""
        preemption = preemption or self.preemption
        data, spe = self.exp.train_data, self.spe
        if self.loop.epoch_sums.epoch != epoch:
            self.loop.epoch_sums = EpochSums(epoch)
        self.progress.start_epoch(epoch + 1)
        self._epoch_started = time.time()
        first, stop = self._step - epoch * spe, min(spe, self.total_steps - epoch * spe)
        # A restored iterator state serves the first epoch trained after the restore only.
        self._batches = batches = data.epoch(epoch, first, self._iterator_state)
        self._iterator_state = None
        size = self._train_size(epoch)
        if size != self._size:
            log.info('Epoch %d on: training images %s (data.low_res: the first %d of %d '
                     'epochs train small).', epoch + 1, f'{size}x{size}' if size else
                     'at full size', self._small_epochs(), self.num_epochs)
            self._size = size

        def on_sync(done: int, fetched: list[dict], last: bool) -> str | None:
            self._step = epoch * spe + done
            self._flush(fetched)
            self._tell_speed_once(epoch, done)
            if last:
                return None
            every = self.ckpt.every_steps
            return self._decide(preemption) or (
                _SAVE_POINT if (every and self._step % every == 0) or self._save_failed() else None)

        try:
            while True:
                self._epoch = run_epoch(
                    self.runner, self._carried, lambda k: data.batch(batches, k, size=size),
                    first, stop, sync_every=self.config.log_every_steps,
                    steps_before=epoch * spe, max_in_flight=self._max_in_flight,
                    on_sync=on_sync, on_step=lambda done: self._on_step(epoch, done))
                self._carried = self._epoch.carried
                if self._epoch.stop != _SAVE_POINT:
                    break
                # checkpoint.every_steps: a checkpoint inside the epoch, then on from there.
                self._sync_state()
                self._save()
                first = self._epoch.steps_done
        finally:
            batches.close()
        if self._epoch.stop:
            return self._epoch.stop
        if stop < spe:   # max_steps ends this epoch early
            return self._decide(preemption)
        return None

    def _save_failed(self) -> bool:
        """Whether the last checkpoint failed in the background (checked at sync points, so
        that the run is protected again at once: the loop saves here). One-process runs
        only: the processes of a multi-process run would not see a failure at the same
        sync point, and they save together; theirs is reported at their next save."""
        return jax.process_count() == 1 and self.ckpt.failed_save() is not None

    def _small_epochs(self) -> int:
        """How many of the first epochs train at data.low_res.size."""
        if self.budget and self.budget.low_res_step_s:
            return self.budget.small_epochs
        low_res = self.config.data.get('low_res')
        return low_res_epochs(self.num_epochs, low_res.epochs_fraction) if low_res else 0

    def _train_size(self, epoch: int) -> int | None:
        """The image side epoch `epoch` trains at (None: the data's own)."""
        return train_image_size(self.config.data.get('low_res'), epoch, self.num_epochs,
                                self._small_epochs())

    def _end_epoch(self, epoch: int, preemption: Preemption) -> str | None:
        """Validation, callbacks, the stop decision and the checkpoint of a full epoch."""
        self._sync_state()
        val_started = time.time()
        val = self.evaluator(eval_variables(self.state), self.exp.val_data)
        val_eval_s = time.time() - val_started
        if self.budget and not self.budget.refitted and epoch == 0:
            self._refit_budget(val_eval_s)
        record = epoch_record(epoch + 1, self._step, self.loop.epoch_sums, val,
                              get_lr_scale(self.state.opt_state), time.time() - self._epoch_started)
        if self.plateau:
            decision = self.plateau.update(epoch, record,
                                           base_lr=float(self.exp.schedule(self._step)))
            if decision.reduced:
                self.state = self.state.replace(
                    opt_state=set_lr_scale(self.state.opt_state, decision.scale))
                self._carried = self.runner.put(self.state)
                self.state = self.runner.get(self._carried)
                log.info('Plateau: learning-rate scale -> %g', decision.scale)
        early_stop = bool(self.early_stopping and self.early_stopping.update(epoch, record).stop)
        improved = self.record.end_epoch(
            record, self._train_size(epoch) or self.exp.train_data.image_shape[0])
        kind = self._decide(preemption, early_stop=early_stop)
        self._set_stop(kind, epoch)
        if self.ckpt.should_save(epoch + 1, self.num_epochs) or improved or kind:
            self._save(record, improved)
        self.progress.write(
            f'epoch {epoch + 1}/{self.num_epochs}: train loss {record["train_loss"]:.4f} acc '
            f'{record["train_accuracy"]:.4f} | val loss {val["loss"]:.4f} acc '
            f'{val["accuracy"]:.4f} ({val["num_examples"]} examples) | '
            f'{record["epoch_time_s"]:.0f} s')
        return kind

    def _refit_budget(self, val_eval_s: float) -> None:
        """Refits the budgeted length from the first epoch as the loop ran it (a low-res
        run also times the full-size step now), and compiles the step for it if the
        length changed (time_budget.py says why)."""
        step_s = self._epoch.seconds_per_step()
        low_res_step_s = 0.0
        if self.budget.low_res_step_s:   # the epoch trained small: time the full size now
            low_res_step_s = step_s
            step_s = full_size_step_s(self.runner, self.state, self.exp.train_data)
        elapsed_s, step_s, low_res_step_s, val_eval_s = agree_measurements(
            time.time() - self._started, step_s, low_res_step_s, val_eval_s)
        length_matters = not math.isinf(length_free_steps(self.config.optimizer, self.spe))
        plan = refit_after_epoch(self.budget, 1, elapsed_s, step_s, val_eval_s,
                                 must_recompile=self._runner_num_epochs != self.budget.num_epochs,
                                 length_matters=length_matters, low_res_step_s=low_res_step_s)
        log.info(refit_message(self.budget, plan))
        self.budget = plan
        self.loop.time_budget = plan.to_json()
        self._set_length(plan.num_epochs)
        self.loop.num_epochs = self.progress.num_epochs = plan.num_epochs
        if length_matters and plan.num_epochs != self._runner_num_epochs:
            self.exp = with_schedule_length(self.exp, plan.num_epochs)
            self.runner = self._make_runner(self.exp)
            self._carried = self.runner.put(self.state)
            self._runner_num_epochs = plan.num_epochs

    def _tell_speed_once(self, epoch: int, done: int) -> None:
        """On CPU, once some steps after the first (which compiles) are timed: how long
        this run will take at this speed, and the CPU recipe when that is long (the
        default config is sized for a GPU or TPU)."""
        timed = self._first_step_done
        if self._speed_told or timed is None or timed[0] != epoch or done - timed[1] < 10:
            return
        self._speed_told = True
        step_s = (time.time() - timed[2]) / (done - timed[1])
        note = long_cpu_run_note(step_s, self.total_steps - self._step, self.num_epochs)
        if note:
            log.warning(note)

    def _on_step(self, epoch: int, done: int) -> None:
        timed = self._first_step_done
        if not self._speed_told and (timed is None or timed[0] != epoch):
            self._first_step_done = (epoch, done, time.time())   # after this epoch's first step
        self.progress.update(done, self._last_metrics)

    def _stop_within_epoch(self, kind: str, epoch: int) -> None:
        """Saves where the loop stopped inside an epoch. At max_steps the weights are also
        validated, so they can compete for the final evaluation; a preempted run resumes
        here and validates the epoch when it completes it."""
        self._sync_state()
        self._set_stop(kind, epoch)
        if kind == PREEMPTED:
            self._save()
            return
        val = self.evaluator(eval_variables(self.state), self.exp.val_data)
        train_loss, train_acc = self.loop.epoch_sums.means()
        record = {'epoch': epoch + 1, 'step': self._step, 'train_loss': float(train_loss),
                  'train_accuracy': float(train_acc), 'val_accuracy': val['accuracy'],
                  'val_loss': val['loss'], 'partial_epoch': True}
        self._save(record, self.loop.best.update(record))

    def _refuse_another_experiment(self) -> None:
        """A resume that would continue another experiment fails here, before the workdir
        is touched. (A damaged latest checkpoint is checked after the fallback restore.)"""
        if self.ckpt.latest_step() is None:
            return
        try:
            _, host = self.ckpt.read_host('latest')
        except CheckpointError:
            return
        self._check_resume(LoopState.from_json(host), warn=False)   # warned after the restore

    def _check_resume(self, loop: LoopState, warn: bool = True) -> None:
        stored = ModelSpec.from_json(loop.model_spec) if loop.model_spec else None
        changed = [d for d in (stored.differences(self.spec) if stored else [])
                   if d.split(':')[0] in _DATA_SPEC_FIELDS]
        check_resume(loop.identity, run_identity(self.config), changed, warn=warn,
                     budgeted=bool(loop.time_budget))

    # ----------------------------------------------------------- the one stop rule
    def _decide(self, preemption: Preemption, early_stop: bool = False) -> str | None:
        """Why training stops now, or None. Called at sync points only, which are the
        same steps on every process, so every process returns the same answer. A run that
        is done anyway stops as done (a SIGTERM then only skips the final evaluation,
        which the rerun does)."""
        preempted = preemption.agreed()   # collective: every process calls it here
        if early_stop:
            return EARLY_STOPPING
        if self._step >= self.total_steps:
            return COMPLETED if self.total_steps == self.full_length else MAX_STEPS
        return PREEMPTED if preempted else None

    def _set_stop(self, kind: str | None, epoch: int | None = None) -> None:
        self.loop.stop_kind = kind
        self.loop.stop_reason = {
            None: None, COMPLETED: 'completed',
            MAX_STEPS: f'max_steps={self.config.max_steps} reached',
            EARLY_STOPPING: f'early stopping at epoch {(epoch or 0) + 1}',
            PREEMPTED: f'preempted (SIGTERM) at step {self._step}'}[kind]
        if kind == PREEMPTED:
            log.warning('Stopping: %s', self.loop.stop_reason)

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
        first = self._step - len(fetched)
        self.record.write_steps(first, fetched, self.spe)
        for i, m in enumerate(fetched):
            for warning in self.grad_health.update(first + i + 1, m):
                log.warning('Gradient health: %s', warning)
        now = time.time()
        ips = len(fetched) * self.config.batch_size / max(now - self._window_start, 1e-9)
        self.record.writer.write_scalars(self._step, {'images_per_second': ips}, 'train')
        self._window_start = now
        self._last_metrics = fetched[-1]
        # The step skips the update of a non-finite loss and records it (state.nonfinite_step);
        # the loss it reports is the one it tested.
        bad = next((first + i for i, m in enumerate(fetched)
                    if not np.isfinite(float(m['loss']))), None)
        if bad is not None:
            self.ckpt.wait_until_finished()
            raise NonFiniteLossError(nonfinite_message(bad, self.spe, self.ckpt.latest_step(),
                                                       self.ckpt.directory))

    def _save(self, metrics: dict | None = None, new_best: bool = False) -> None:
        if self.early_stopping:
            self.loop.early_stopping = self.early_stopping.state_dict()
        if self.plateau:
            self.loop.plateau = self.plateau.state_dict()
        self.record.save(self._step, self.state, metrics, new_best,
                         iterator_state=self._batches.state() if self._batches else None)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path | epath.Path) -> dict:
    """Trains per `config` in `workdir` (resuming if it holds checkpoints); returns results.
    SIGTERM is honoured from here on, data loading and compilation included."""
    with Preemption() as preemption:
        return Trainer(config, workdir, preemption).run()
