"""The training loop, in phases: set up -> restore or start -> train epochs -> evaluate
the final weights.

Everything per step stays on device; the host syncs at *sync points* (every
`log_every_steps` steps and at each epoch end) to write logs, check for a non-finite
loss and decide whether to stop. Stopping is decided in exactly one place,
`Trainer._decide`, from the loop's state and a preemption flag that every process agrees
on, so all processes of a pod stop at the same step and save together. What the loop
knows (epochs validated, history, the running sums of a partial epoch, callback state,
the best epoch, why it stopped, the model spec) is a `LoopState` saved with every
checkpoint, so a resumed run continues exactly and a finished one knows it is finished.
"""
from __future__ import annotations

import collections
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
from ghostnet_jax.training import steps
from ghostnet_jax.training.callbacks import callbacks_from_config
from ghostnet_jax.training.checkpoints import BEST_MARK, Checkpointer, CheckpointError
from ghostnet_jax.training.config_checks import (check_batch_sizes, check_low_res_size,
                                                 check_parallel)
from ghostnet_jax.training.experiment import build_experiment, with_schedule_length
from ghostnet_jax.training.final_evaluation import evaluate_final_weights
from ghostnet_jax.training.final_weights import final_weights_rule
from ghostnet_jax.training.loop_state import (COMPLETED, EARLY_STOPPING, FINISHED_KINDS,
                                              MAX_STEPS, PREEMPTED, BestSoFar, EpochSums,
                                              LoopState)
from ghostnet_jax.training.metrics_log import (MetricsWriter, Progress, flat_scalars,
                                               write_run_config)
from ghostnet_jax.training.model_spec import ModelSpec, spec_from_training
from ghostnet_jax.training.optim import get_lr_scale, length_free_steps, set_lr_scale
from ghostnet_jax.training.parallel import DataParallelStep, make_mesh
from ghostnet_jax.study.grad_health import GradientHealth
from ghostnet_jax.training.preemption import Preemption
from ghostnet_jax.training.resume_checks import check_resume, run_identity
from ghostnet_jax.training.state import eval_variables
from ghostnet_jax.training.low_res import low_res_epochs, train_image_size
from ghostnet_jax.training.budget_fit import (BudgetPlan, configure_for, full_size_refit_due,
                                              refit_after_epoch, refit_message, with_respacing)
from ghostnet_jax.training.time_budget import agree_measurements, fit_to_budget, loop_step_seconds

log = logging.getLogger(__name__)

# The spec fields that say the training data itself changed (the rest is the model,
# which the identity check covers).
_DATA_SPEC_FIELDS = ('class_names', 'image_shape', 'mean', 'std', 'resize')


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stopped, keeping the last good checkpoint."""


def Evaluator(model, num_classes: int, flip: bool = False) -> ExactEvaluator:
    """The project's one evaluator applied to `model` in eval mode (`flip`: average with
    the mirrored images, config.eval_flip)."""
    return ExactEvaluator(functools.partial(steps.eval_logits, model=model, flip=flip),
                          num_classes)


class Trainer:
    """One run in one workdir. `run()` trains (or resumes, or only finishes) and returns
    the results; nothing here is specific to one process or device count."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path | epath.Path,
                 preemption: Preemption | None = None):
        self.config = config
        self.preemption = preemption or Preemption()
        self.workdir = epath.Path(workdir)   # local folders and gs:// alike
        self.mesh = make_mesh()
        check_batch_sizes(config, self.mesh.size)
        check_parallel(config, jax.process_count())
        log.info('Devices: %d (%s), processes: %d', self.mesh.size, jax.default_backend(),
                 jax.process_count())
        self._started = time.time()
        self.exp = exp = build_experiment(config, self.mesh)
        check_low_res_size(config, exp.train_data.image_shape)
        # Only now: a run that cannot get its data leaves no empty workdir behind.
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ckpt = Checkpointer.from_config(self.workdir, config.checkpoint)
        self.evaluator = Evaluator(exp.model, len(exp.class_names),
                                   flip=config.get('eval_flip', False))
        self.budget: BudgetPlan | None = None
        calibrated_runner = None
        # The length the running step's schedule spans (a budgeted run's first epoch may
        # run on the calibration's step, compiled for the config's num_epochs).
        self._runner_num_epochs = config.num_epochs
        if config.get('time_budget_minutes'):
            exp, self.budget, calibrated_runner = fit_to_budget(
                config.time_budget_minutes, exp, self.ckpt, self._started, self._make_runner,
                self.evaluator)
            self.exp = exp
            if calibrated_runner is None and self.budget:
                self._runner_num_epochs = self.budget.num_epochs
            if self.budget:   # config.json records the fitted length
                log.info('num_epochs=%d comes from time_budget_minutes (the config said %d; '
                         'set time_budget_minutes=0 to train that).', self.budget.num_epochs,
                         config.num_epochs)
                configure_for(self.budget, config)
        self.spe = exp.train_data.steps_per_epoch
        self.num_epochs = config.num_epochs
        self.full_length = self.spe * self.num_epochs
        self.total_steps = min(self.full_length, config.max_steps or self.full_length)
        self.rule = final_weights_rule(config)
        self.early_stopping, self.plateau = callbacks_from_config(config.callbacks)
        self.runner = calibrated_runner or self._make_runner(exp)
        self._epoch_clock: list[tuple[int, float]] = []   # (steps done, time) at sync points
        self.spec = spec_from_training(config, exp.class_names, exp.train_data.image_shape,
                                       exp.train_data.mean, exp.train_data.std)
        self._refuse_another_experiment()   # before anything is written to the workdir
        write_run_config(self.workdir, config)
        self.writer = MetricsWriter(self.workdir)
        self.progress = Progress(self.spe, self.num_epochs, config.batch_size)
        self.grad_health = GradientHealth()
        self.loop = LoopState()
        self.state = exp.state
        self._carried = None          # the runner's state while training (donated each step)
        self._pending: list = []      # per-step metrics not yet fetched by the host
        self._in_flight: collections.deque = collections.deque()
        self._max_in_flight = steps_in_flight()   # 0: each step waits for its inputs
        self._window_start = self._epoch_started = time.time()
        self._last_metrics: dict = {}
        self._step = 0                # steps trained (host count; state.step agrees)
        self._size: int | None = None   # the image side the last epoch trained at

    def _make_runner(self, exp) -> DataParallelStep:
        config = self.config
        step_fn = functools.partial(
            steps.train_step, model=exp.model, tx=exp.tx, schedule=exp.schedule,
            seed=config.seed, label_smoothing=config.label_smoothing,
            ema_decay=config.ema_decay)
        return DataParallelStep(step_fn, self.mesh, config.parallel)

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
                self.writer.close()
                return json.loads(results_path.read_text())
            if self.loop.stop_kind is None:
                self._train(preemption)
            self.ckpt.wait_until_finished()
            if self.loop.stop_kind == PREEMPTED or preemption.agreed():
                self.writer.close()
                where = ('training finished; the final evaluation'
                         if self.loop.stop_kind in FINISHED_KINDS else 'training')
                log.warning('Stopped: preempted (SIGTERM) at step %d. Rerun with the same '
                            '--workdir to resume %s.', self._step, where)
                return {'status': 'preempted', 'step': self._step}
            results = evaluate_final_weights(
                self.ckpt, self.exp, self.rule, self.loop, self.evaluator,
                wall_s=time.time() - self._started)
        self.writer.write_hparams(flat_scalars(self.config.to_dict()), {
            k: v for k, v in flat_scalars(results).items() if isinstance(v, float)})
        self.writer.close()
        if jax.process_index() == 0:
            (self.workdir / 'results.json').write_text(json.dumps(results, indent=2))
            if self.config.get('report', False):
                self._write_report()
        return results

    def _write_report(self) -> None:
        """report/report.md with the curves, diagnosis and confusion matrix. A report that
        fails is a warning: the run and its results are complete without it."""
        from ghostnet_jax.study.report import write_report
        try:
            log.info('Report: %s', write_report(self.workdir))
        except Exception as e:   # plots must never cost a finished run its exit status
            log.warning('Could not write the run report (%s: %s); retry with python -m '
                        'ghostnet_jax.report --workdir %s', type(e).__name__, e, self.workdir)

    def _restore_or_start(self) -> None:
        config = self.config
        identity = run_identity(config)
        if self.ckpt.latest_step() is None:
            self.loop = LoopState(
                identity=identity, num_epochs=self.num_epochs, max_steps=config.max_steps,
                model_spec=self.spec.to_json(),
                time_budget=self.budget.to_json() if self.budget else None,
                best=BestSoFar(self.rule.metric, self.rule.mode, min_delta=self._best_delta()))
            self.writer.write_hparams(flat_scalars(config.to_dict()), {})
            return
        state, host = self.ckpt.restore_latest_intact(self.exp.state, mesh=self.mesh)
        loop = LoopState.from_json(host)
        self._check_resume(loop)
        if self.early_stopping and loop.early_stopping:
            self.early_stopping.load_state_dict(loop.early_stopping)
        if self.plateau and loop.plateau:
            self.plateau.load_state_dict(loop.plateau)
        if loop.best is None or (loop.best.metric, loop.best.mode) != (self.rule.metric,
                                                                     self.rule.mode):
            loop.best = BestSoFar(self.rule.metric, self.rule.mode, min_delta=self._best_delta())
            for record in loop.history:
                loop.best.update(record)
        self.state, self.loop = state, loop
        self._step = step = int(jax.device_get(state.step))
        log.info('Resumed from step %d (%d epochs evaluated)', step, loop.evaluated_epochs)
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
        loop.identity, loop.model_spec = identity, self.spec.to_json()

    def _train(self, preemption: Preemption) -> None:
        """Trains until `_decide` names a reason to stop, and saves there."""
        self._carried = self.runner.put(self.state)
        self._window_start = time.time()
        kind = None
        epoch = self.loop.evaluated_epochs
        while epoch < self.num_epochs:       # a refit after the first epoch may change it
            kind = self._train_epoch_steps(epoch, preemption)
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

    def _train_epoch_steps(self, epoch: int, preemption: Preemption) -> str | None:
        data, spe = self.exp.train_data, self.spe
        if self.loop.epoch_sums.epoch != epoch:
            self.loop.epoch_sums = EpochSums(epoch)
        self.progress.start_epoch(epoch + 1)
        self._epoch_started = time.time()
        batches = data.epoch(epoch)
        size = self._train_size(epoch)
        if size != self._size:
            log.info('Epoch %d on: training images %s (data.low_res: the first %d of %d '
                     'epochs train small).', epoch + 1, f'{size}x{size}' if size else
                     'at full size', low_res_epochs(self.num_epochs,
                                                    self.config.data.low_res.epochs_fraction),
                     self.num_epochs)
            self._size = size
        first, stop = self._step - epoch * spe, min(spe, self.total_steps - epoch * spe)
        self._epoch_clock = [(first, self._epoch_started)]
        for k in range(first, stop):
            batch = data.batch(batches, k, size=size)
            if not self._max_in_flight:
                batch = jax.block_until_ready(batch)
            self._carried, metrics = self.runner.step(self._carried, batch)
            self._pending.append(metrics)
            self._bound_in_flight(metrics['loss'])
            at_sync_point = ((epoch * spe + k + 1) % self.config.log_every_steps == 0
                             or k == stop - 1)
            if at_sync_point:
                self._flush()     # fetches the window's metrics: its steps are done
                self._epoch_clock.append((k + 1, time.time()))
            self.progress.update(k + 1, self._last_metrics)
            if at_sync_point and k < stop - 1:
                kind = self._decide(preemption)
                if kind:
                    return kind
        if stop < spe:   # max_steps ends this epoch early
            return self._decide(preemption)
        return None

    def _train_size(self, epoch: int) -> int | None:
        """The image side epoch `epoch` trains at (None: the data's own)."""
        return train_image_size(self.config.data.get('low_res'), epoch, self.num_epochs)

    def _end_epoch(self, epoch: int, preemption: Preemption) -> str | None:
        """Validation, callbacks, the stop decision and the checkpoint of a full epoch."""
        self._sync_state()
        val_started = time.time()
        val = self.evaluator(eval_variables(self.state), self.exp.val_data)
        val_eval_s = time.time() - val_started
        train_loss, train_acc = self.loop.epoch_sums.means()
        record = {'epoch': epoch + 1, 'step': self._step, 'train_loss': float(train_loss),
                  'train_accuracy': float(train_acc), 'val_accuracy': val['accuracy'],
                  'val_loss': val['loss'], 'lr_scale': float(get_lr_scale(self.state.opt_state)),
                  'epoch_time_s': time.time() - self._epoch_started}
        if self.budget and ((not self.budget.refitted and epoch == 0)
                            or full_size_refit_due(self.budget, epoch + 1)):
            self._refit_budget(epoch + 1, val_eval_s)
        self.writer.write_scalars(self._step, {'loss': val['loss'], 'accuracy': val['accuracy']},
                                  'val', epoch=epoch + 1)
        self.writer.write_scalars(self._step, {
            'epoch_time_s': record['epoch_time_s'],
            'image_size': self._train_size(epoch) or self.exp.train_data.image_shape[0]},
            'train', epoch=epoch + 1)
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
        self.loop.history.append(record)
        self.loop.evaluated_epochs = epoch + 1
        self.loop.epoch_sums = EpochSums(epoch + 1)
        improved = self.loop.best.update(record)
        kind = self._decide(preemption, early_stop=early_stop)
        self._set_stop(kind, epoch)
        if self.ckpt.should_save(epoch + 1, self.num_epochs) or improved or kind:
            self._save(record, improved)
        self.progress.write(
            f'epoch {epoch + 1}/{self.num_epochs}: train loss {train_loss:.4f} acc {train_acc:.4f}'
            f' | val loss {val["loss"]:.4f} acc {val["accuracy"]:.4f}'
            f' ({val["num_examples"]} examples) | {record["epoch_time_s"]:.0f} s')
        return kind

    def _refit_budget(self, epochs_done: int, val_eval_s: float) -> None:
        """Refits the budgeted length from the epoch just done as the loop ran it (the
        first, and a low-res run's first at full size; time_budget.py says why), and
        compiles the step for it if the length changed."""
        step_s = loop_step_seconds(self._epoch_clock)
        elapsed_s, step_s, val_eval_s = agree_measurements(
            time.time() - self._started, step_s, val_eval_s)
        length_matters = not math.isinf(length_free_steps(self.config.optimizer, self.spe))
        plan = refit_after_epoch(self.budget, epochs_done, elapsed_s, step_s, val_eval_s,
                                 must_recompile=self._runner_num_epochs != self.budget.num_epochs,
                                 length_matters=length_matters)
        if length_matters and epochs_done > 1:    # the decay has begun
            plan = with_respacing(self.budget, plan)
        log.info(refit_message(self.budget, plan))
        self.budget = plan
        self.loop.time_budget = plan.to_json()
        configure_for(plan, self.config)   # the count of small epochs, if rounded up
        # A resume compares its config with this one, which now holds the refit's length.
        self.loop.identity = run_identity(self.config)
        self._set_num_epochs(plan.num_epochs)
        if length_matters and plan.num_epochs != self._runner_num_epochs:
            self.exp = with_schedule_length(self.exp, plan.num_epochs)
            self.runner = self._make_runner(self.exp)
            self._carried = self.runner.put(self.state)
            self._runner_num_epochs = plan.num_epochs

    def _set_num_epochs(self, num_epochs: int) -> None:
        self.config.num_epochs = self.num_epochs = self.loop.num_epochs = num_epochs
        self.progress.num_epochs = num_epochs
        self.full_length = self.spe * num_epochs
        self.total_steps = min(self.full_length, self.config.max_steps or self.full_length)
        write_run_config(self.workdir, self.config, replace=True)

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
        check_resume(loop.identity, run_identity(self.config), changed, warn=warn)

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
    def _bound_in_flight(self, token: jax.Array) -> None:
        """Counts the step just dispatched and keeps at most `steps_in_flight()` queued (none
        on CPU): an unbounded queue of collective steps is what aborted 8-device CPU runs."""
        self._step += 1
        self._in_flight.append(token)
        while len(self._in_flight) > self._max_in_flight:
            self._in_flight.popleft().block_until_ready()

    def _sync_state(self) -> None:
        self.state = self.runner.get(self._carried) if self._carried is not None else self.state

    def _flush(self) -> None:
        """Writes the pending steps' metrics, adds them to the epoch's sums and checks
        that the loss stayed finite."""
        if not self._pending:
            return
        fetched = jax.device_get(self._pending)
        first = self._step - len(fetched)
        for i, m in enumerate(fetched):
            self.writer.write_scalars(first + i + 1, m, 'train', epoch=(first + i) // self.spe + 1)
            self.loop.epoch_sums.add(float(m['loss']), float(m['accuracy']))
            for warning in self.grad_health.update(first + i + 1, m):
                log.warning('Gradient health: %s', warning)
        now = time.time()
        ips = len(fetched) * self.config.batch_size / max(now - self._window_start, 1e-9)
        self.writer.write_scalars(self._step, {'images_per_second': ips}, 'train')
        self._pending, self._window_start = [], now
        self._last_metrics = fetched[-1]
        carried = self._carried if self._carried is not None else self.state
        # Replicas agree (pmap carries one value per device), so any one will do.
        bad = int(np.max(jax.device_get(carried.nonfinite_step)))
        if bad >= 0:
            self.ckpt.wait_until_finished()
            # `bad` counts the updates before the bad loss; the logs (metrics.jsonl,
            # TensorBoard) label that loss with step bad + 1, so name it the same way.
            raise NonFiniteLossError(
                f'Loss is not finite at step {bad + 1} (epoch {bad // self.spe + 1}); no update '
                f'was applied from that step on. Last good checkpoint: step '
                f'{self.ckpt.latest_step()} in {self.ckpt.directory}. Lower '
                'optimizer.learning_rate or set optimizer.grad_clip_norm.')

    def _best_delta(self) -> float:
        es = self.config.callbacks.early_stopping
        return float(abs(es.min_delta)) if (es.enabled and es.restore_best) else 0.0

    def _save(self, metrics: dict | None = None, new_best: bool = False) -> None:
        if self._step in self.ckpt.all_steps():
            return
        self._flush()
        # Logs are at least as durable as checkpoints: after a crash (SIGKILL, OOM) the
        # resumed run continues metrics.jsonl/TensorBoard from the step it restores.
        self.writer.flush()
        if self.early_stopping:
            self.loop.early_stopping = self.early_stopping.state_dict()
        if self.plateau:
            self.loop.plateau = self.plateau.state_dict()
        metrics = dict(metrics or {})
        if new_best:
            metrics[BEST_MARK] = 1.0
        self.ckpt.save(self._step, self.state, self.loop.to_json(), metrics or None)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path | epath.Path) -> dict:
    """Trains per `config` in `workdir` (resuming if it holds checkpoints); returns results.
    SIGTERM is honoured from here on, data loading and compilation included."""
    with Preemption() as preemption:
        return Trainer(config, workdir, preemption).run()
