"""What one run writes into its workdir: config.json, the metric logs (TensorBoard and
metrics.jsonl), the checkpoints, each with the loop state, and at the end results.json
from the weights the final-weights rule picks (and report/ when config.report).

The trainer keeps one `RunRecord`; a vectorized sweep keeps one per model, so a run
trained either way is written the same way.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable

import jax
import ml_collections
from etils import epath

from ghostnet_jax.training.checkpoints import BEST_MARK, Checkpointer
from ghostnet_jax.training.environment import compute_setup, environment
from ghostnet_jax.training.final_evaluation import evaluate_final_weights
from ghostnet_jax.training.final_weights import final_weights_rule
from ghostnet_jax.training.loop_state import BestSoFar, EpochSums, LoopState
from ghostnet_jax.training.metrics_log import MetricsWriter, flat_scalars, write_run_config
from ghostnet_jax.training.model_spec import ModelSpec
from ghostnet_jax.training.resume_checks import run_identity

log = logging.getLogger(__name__)


class RunRecord:
    """One run's workdir and the loop state that goes with every checkpoint."""

    def __init__(self, workdir: str | epath.Path, config: ml_collections.ConfigDict,
                 spec: ModelSpec, ckpt: Checkpointer | None = None,
                 iterator_state: bool = False):
        self.workdir = epath.Path(workdir)
        self.config = config
        self.spec = spec
        self.rule = final_weights_rule(config)
        self.ckpt = ckpt or Checkpointer.from_config(self.workdir, config.checkpoint,
                                                     iterator_state=iterator_state)
        self.loop = LoopState()
        self.writer: MetricsWriter | None = None
        self._last_save: tuple = (None, None, False, None)   # save()'s arguments

    def start(self, num_epochs: int, time_budget: dict | None = None) -> LoopState:
        """A fresh loop state for a run that starts now."""
        self.loop = LoopState(
            identity=run_identity(self.config), num_epochs=num_epochs,
            max_steps=self.config.max_steps, model_spec=self.spec.to_json(),
            time_budget=time_budget, compute=[{'from_step': 0, **compute_setup()}],
            best=BestSoFar(self.rule.metric, self.rule.mode, min_delta=self.best_delta()))
        return self.loop

    def best_delta(self) -> float:
        """Early stopping's min_delta when its restore_best picks the final weights."""
        es = self.config.callbacks.early_stopping
        return float(abs(es.min_delta)) if (es.enabled and es.restore_best) else 0.0

    def open(self) -> None:
        """config.json (as the user gave it) and the metric logs."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_run_config(self.workdir, self.config)
        self.writer = MetricsWriter(self.workdir)

    # ------------------------------------------------------------------ during training
    def write_steps(self, first_step: int, fetched: list[dict], steps_per_epoch: int) -> None:
        """Per-step train metrics of steps first_step+1.. into the logs and the epoch's sums."""
        for i, m in enumerate(fetched):
            step = first_step + i + 1
            self.writer.write_scalars(step, m, 'train', epoch=(step - 1) // steps_per_epoch + 1)
            self.loop.epoch_sums.add(float(m['loss']), float(m['accuracy']))

    def end_epoch(self, record: dict, image_size: int) -> bool:
        """An epoch's record (validation included) into the logs, the history and the best
        so far; returns whether it is a new best."""
        epoch, step = record['epoch'], record['step']
        self.writer.write_scalars(step, {'loss': record['val_loss'],
                                         'accuracy': record['val_accuracy']}, 'val', epoch=epoch)
        self.writer.write_scalars(step, {'epoch_time_s': record['epoch_time_s'],
                                         'image_size': image_size}, 'train', epoch=epoch)
        self.loop.history.append(record)
        self.loop.evaluated_epochs = epoch
        self.loop.epoch_sums = EpochSums(epoch)
        return self.loop.best.update(record)

    def save(self, step: int, state: Any, metrics: dict | None = None,
             new_best: bool = False, iterator_state: dict | None = None) -> None:
        """A checkpoint of `state` at `step` with the loop state (once per step), and a
        streamed run's input-iterator state. The logs are flushed first: they are at least
        as durable as checkpoints, so a run resumed after a crash continues them from the
        step it restores."""
        if step in self.ckpt.all_steps():
            return
        self.writer.flush()
        self._last_save = (step, metrics, new_best, iterator_state)
        metrics = dict(metrics or {})
        if new_best:
            metrics[BEST_MARK] = 1.0
        self.ckpt.save(step, state, self.loop.to_json(), metrics or None, iterator_state)

    def save_again(self, failed: int, step: int, state: Any,
                   iterator_state: dict | None = None) -> None:
        """Saves after the background save of step `failed` failed: that save again (its
        metrics and best mark) when the run is still at that step, else `state` at `step`."""
        last_step, metrics, new_best, last_iterator = self._last_save
        if last_step == failed == step:
            self.save(step, state, metrics, new_best, last_iterator)
        else:
            self.save(step, state, iterator_state=iterator_state)

    # ------------------------------------------------------------------------ the end
    def finish(self, exp: Any, evaluator: Callable, wall_s: float,
               extra: dict | None = None) -> dict:
        """results.json: the final weights evaluated on validation and test, the length
        trained and the environment (and `extra`); also report/ when config.report."""
        self.ckpt.wait_until_finished()
        results = evaluate_final_weights(self.ckpt, exp, self.rule, self.loop, evaluator,
                                         wall_s=wall_s)
        results['num_epochs'] = self.loop.num_epochs
        results['environment'] = environment()
        results['compute'] = self.loop.compute
        results.update(extra or {})
        self.writer.write_hparams(flat_scalars(self.config.to_dict()), {
            k: v for k, v in flat_scalars(results).items()
            if isinstance(v, float) and not k.startswith('environment.')})
        self.close()
        if jax.process_index() == 0:
            (self.workdir / 'results.json').write_text(json.dumps(results, indent=2))
            if self.config.get('report', False):
                self._write_report()
        return results

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _write_report(self) -> None:
        """report/report.md with the curves, diagnosis and confusion matrix. A report that
        fails is a warning: the run and its results are complete without it."""
        from ghostnet_jax.study.report import write_report
        try:
            log.info('Report: %s', write_report(self.workdir))
        except Exception as e:   # plots must never cost a finished run its exit status
            log.warning('Could not write the run report (%s: %s); retry with python -m '
                        'ghostnet_jax.report --workdir %s', type(e).__name__, e, self.workdir)


def epoch_record(epoch: int, step: int, sums: EpochSums, val: dict, lr_scale: float,
                 seconds: float) -> dict:
    """One epoch of the history (loop state, metrics.jsonl, the callbacks' input)."""
    train_loss, train_acc = sums.means()
    return {'epoch': epoch, 'step': step, 'train_loss': float(train_loss),
            'train_accuracy': float(train_acc), 'val_accuracy': val['accuracy'],
            'val_loss': val['loss'], 'lr_scale': float(lr_scale), 'epoch_time_s': seconds}

