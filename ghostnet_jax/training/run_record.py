"""What one run writes into its workdir: config.json, the metric logs (TensorBoard and
metrics.jsonl), the checkpoints, each with the loop state, and at the end results.json
from the weights the final-weights rule picks.

The record owns the loop state (`LoopState`): every change to it is one of the methods
below, so what a checkpoint says about the loop is written in one place. The trainer keeps
one `RunRecord`; a vectorized sweep keeps one per model, so a run trained either way is
written the same way.
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
from ghostnet_jax.training.evaluation import evaluate_final_weights, final_weights_rule
from ghostnet_jax.training.loop_state import BestSoFar, EpochSums, LoopState
from ghostnet_jax.training.metrics_log import MetricsWriter, flat_scalars, write_run_config
from ghostnet_jax.training.model_spec import ModelSpec
from ghostnet_jax.training.resume_checks import compute_change, run_identity

log = logging.getLogger(__name__)


class RunRecord:
    """One run's workdir and the loop state that goes with every checkpoint."""

    def __init__(
        self,
        workdir: str | epath.Path,
        config: ml_collections.ConfigDict,
        spec: ModelSpec,
        ckpt: Checkpointer | None = None,
        iterator_state: bool = False,
    ):
        self.workdir = epath.Path(workdir)
        self.config = config
        self.spec = spec
        self.rule = final_weights_rule(config)
        self.ckpt = ckpt or Checkpointer.from_config(
            self.workdir, config.checkpoint, iterator_state=iterator_state
        )
        self.loop = LoopState()
        self.writer: MetricsWriter | None = None
        self._last_save: tuple = (None, None, False, None)  # save()'s arguments
        self._new = False  # a run that starts now (start), not a resumed one

    # ------------------------------------------------------------- the loop state
    def start(self, num_epochs: int | None = None) -> LoopState:
        """A fresh loop state for a run that starts now (its length: `set_length`)."""
        self.loop = LoopState(
            identity=run_identity(self.config),
            num_epochs=num_epochs or self.config.num_epochs,
            max_steps=self.config.max_steps,
            model_spec=self.spec.to_json(),
            compute=[{'from_step': 0, **compute_setup()}],
            best=BestSoFar(self.rule.metric, self.rule.mode, min_delta=self.best_delta()),
        )
        self._new = True
        return self.loop

    def resume(self, loop: LoopState, step: int) -> None:
        """The restored loop state of a run that goes on at `step` under this config: its
        identity, model spec and max_steps are now this config's, the best epoch is ranked
        by this config's rule, and a change of what it computes with is logged and kept."""
        if loop.best is None or (loop.best.metric, loop.best.mode) != (
            self.rule.metric,
            self.rule.mode,
        ):
            loop.best = BestSoFar(self.rule.metric, self.rule.mode, min_delta=self.best_delta())
            for record in loop.history:
                loop.best.update(record)
        setup = compute_setup()
        change = compute_change(loop.compute, setup, step)
        if change:
            log.warning(change)
        if change or not loop.compute:
            loop.compute.append({'from_step': step, **setup})
        loop.max_steps = self.config.max_steps
        loop.identity, loop.model_spec = run_identity(self.config), self.spec.to_json()
        self.loop = loop

    def set_length(self, num_epochs: int, plan: dict | None = None) -> None:
        """The run's length, and the time budget's plan it comes from (None: none)."""
        self.loop.num_epochs, self.loop.time_budget = num_epochs, plan

    def set_stop(self, kind: str | None, reason: str | None = None) -> None:
        """Why the loop stopped (a loop_state kind and its words), or None: it goes on."""
        self.loop.stop_kind, self.loop.stop_reason = kind, reason

    def start_epoch(self, epoch: int) -> None:
        """Epoch `epoch` (0-based) trains now: its running sums start, unless a resumed
        run is inside it already."""
        if self.loop.epoch_sums.epoch != epoch:
            self.loop.epoch_sums = EpochSums(epoch)

    def set_callbacks(self, early_stopping: dict | None, plateau: dict | None) -> None:
        """The callbacks' state, saved with the next checkpoint."""
        self.loop.early_stopping, self.loop.plateau = early_stopping, plateau

    def best_delta(self) -> float:
        """Early stopping's min_delta when its restore_best picks the final weights."""
        es = self.config.callbacks.early_stopping
        return float(abs(es.min_delta)) if (es.enabled and es.restore_best) else 0.0

    def open(self) -> None:
        """config.json (as the user gave it) and the metric logs (a new run's hyperparameters
        first)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_run_config(self.workdir, self.config)
        self.writer = MetricsWriter(self.workdir)
        if self._new:
            self.writer.write_hparams(flat_scalars(self.config.to_dict()), {})

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
        self.writer.write_scalars(
            step,
            {'loss': record['val_loss'], 'accuracy': record['val_accuracy']},
            'val',
            epoch=epoch,
        )
        self.writer.write_scalars(
            step,
            {'epoch_time_s': record['epoch_time_s'], 'image_size': image_size},
            'train',
            epoch=epoch,
        )
        self.loop.history.append(record)
        self.loop.evaluated_epochs = epoch
        self.loop.epoch_sums = EpochSums(epoch)
        return self.rank(record)

    def rank(self, record: dict) -> bool:
        """`record` (an epoch's, or a partial epoch's at max_steps) against the best so far;
        whether it is the new best."""
        return self.loop.best.update(record)

    def save(
        self,
        step: int,
        state: Any,
        metrics: dict | None = None,
        new_best: bool = False,
        iterator_state: dict | None = None,
    ) -> None:
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

    def save_again(
        self, failed: int, step: int, state: Any, iterator_state: dict | None = None
    ) -> None:
        """Saves after the background save of step `failed` failed: that save again (its
        metrics and best mark) when the run is still at that step, else `state` at `step`."""
        last_step, metrics, new_best, last_iterator = self._last_save
        if last_step == failed == step:
            self.save(step, state, metrics, new_best, last_iterator)
        else:
            self.save(step, state, iterator_state=iterator_state)

    # ------------------------------------------------------------------------ the end
    def finish(
        self, experiment: Any, evaluator: Callable, wall_s: float, extra: dict | None = None
    ) -> dict:
        """results.json: the final weights evaluated on validation and test, the length
        trained and the environment (and `extra`)."""
        self.ckpt.wait_until_finished()
        results = evaluate_final_weights(
            self.ckpt, experiment, self.rule, self.loop, evaluator, wall_s=wall_s
        )
        results['num_epochs'] = self.loop.num_epochs
        results['environment'] = environment()
        results['compute'] = self.loop.compute
        results.update(extra or {})
        self.writer.write_hparams(
            flat_scalars(self.config.to_dict()),
            {
                k: v
                for k, v in flat_scalars(results).items()
                if isinstance(v, float) and not k.startswith('environment.')
            },
        )
        self.close()
        if jax.process_index() == 0:
            (self.workdir / 'results.json').write_text(json.dumps(results, indent=2))
        return results

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def epoch_record(
    epoch: int, step: int, sums: EpochSums, val: dict, lr_scale: float, seconds: float
) -> dict:
    """One epoch of the history (loop state, metrics.jsonl, the callbacks' input)."""
    train_loss, train_acc = sums.means()
    return {
        'epoch': epoch,
        'step': step,
        'train_loss': float(train_loss),
        'train_accuracy': float(train_acc),
        'val_accuracy': val['accuracy'],
        'val_loss': val['loss'],
        'lr_scale': float(lr_scale),
        'epoch_time_s': seconds,
    }
