"""The training loop: setup -> resume -> epochs (train, validate, callbacks, checkpoint)
-> final evaluation of the best checkpoint. Everything per step stays on device; the host
syncs once every `log_every_steps` steps to write logs and check for a non-finite loss."""
from __future__ import annotations

import functools
import json
import logging
import signal
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from etils import epath

from ghostnet_jax.data.metrics import ExactEvaluator
from ghostnet_jax.training import steps
from ghostnet_jax.training.callbacks import callbacks_from_config
from ghostnet_jax.training.checkpoints import Checkpointer
from ghostnet_jax.training.config_checks import check_batch_sizes
from ghostnet_jax.training.experiment import Experiment, build_experiment
from ghostnet_jax.training.model_spec import SPEC_KEY, spec_from_training
from ghostnet_jax.training.metrics_log import MetricsWriter, Progress
from ghostnet_jax.training.optim import get_lr_scale, set_lr_scale
from ghostnet_jax.training.parallel import DataParallelStep, make_mesh
from ghostnet_jax.training.state import eval_variables

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stopped, keeping the last good checkpoint."""


class _Preemption:
    """Turns SIGTERM (Cloud TPU preemption, `kill`) into a flag the loop checks each step."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no signal handling, no preemption saves
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def Evaluator(model, num_classes: int) -> ExactEvaluator:
    """The project's one evaluator applied to `model` in eval mode."""
    return ExactEvaluator(functools.partial(steps.eval_logits, model=model), num_classes)


def _write_config(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
    """Saves the resolved config; a resumed run with a changed config adds a new file."""
    if jax.process_index() != 0:
        return
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    path = workdir / 'config.json'
    if path.exists() and path.read_text() != text:
        path = workdir / f'config.{time.strftime("%Y%m%d-%H%M%S")}.json'
        log.warning('Config differs from the one this workdir started with; saved as %s', path)
    if not path.exists():
        path.write_text(text)


def _flat(d: dict, prefix: str = '') -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def _val_record(summary: dict, prefix: str) -> dict:
    return {f'{prefix}_accuracy': summary['accuracy'], f'{prefix}_loss': summary['loss']}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path | epath.Path) -> dict:
    """Trains per `config` in `workdir` (resuming if it holds checkpoints); returns results."""
    workdir = epath.Path(workdir)   # local folders and gs:// alike
    mesh = make_mesh()
    check_batch_sizes(config, mesh.size)
    workdir.mkdir(parents=True, exist_ok=True)
    _write_config(workdir, config)
    log.info('Devices: %d (%s), processes: %d', mesh.size, jax.default_backend(),
             jax.process_count())
    exp = build_experiment(config, mesh)
    spe, num_epochs = exp.train_data.steps_per_epoch, config.num_epochs
    total_steps = spe * num_epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)

    early_stopping, plateau = callbacks_from_config(config.callbacks)
    step_fn = functools.partial(
        steps.train_step, model=exp.model, tx=exp.tx, schedule=exp.schedule, seed=config.seed,
        label_smoothing=config.label_smoothing, ema_decay=config.ema_decay)
    runner = DataParallelStep(step_fn, mesh, config.parallel)
    evaluator = Evaluator(exp.model, len(exp.class_names))
    writer = MetricsWriter(workdir)
    ckpt = Checkpointer.from_config(workdir, config.checkpoint)

    state, history, evaluated_epochs = exp.state, [], 0
    if ckpt.latest_step() is not None:
        state, host = ckpt.restore(exp.state, 'latest', mesh=mesh)
        evaluated_epochs, history = host['evaluated_epochs'], host['history']
        if early_stopping and host.get('early_stopping'):
            early_stopping.load_state_dict(host['early_stopping'])
        if plateau and host.get('plateau'):
            plateau.load_state_dict(host['plateau'])
        log.info('Resumed from step %d (%d epochs evaluated)', int(state.step), evaluated_epochs)
    else:
        writer.write_hparams(_flat(config.to_dict()), {})

    spec = spec_from_training(config, exp.class_names, exp.train_data.image_shape,
                              exp.train_data.mean, exp.train_data.std)

    def host_state():
        return {SPEC_KEY: spec.to_json(), 'evaluated_epochs': evaluated_epochs, 'history': history,
                'early_stopping': early_stopping.state_dict() if early_stopping else None,
                'plateau': plateau.state_dict() if plateau else None}

    def save(state, metrics=None):
        step = int(state.step)
        if step in ckpt.all_steps():
            return
        # Logs are at least as durable as checkpoints: after a crash (SIGKILL, OOM) the
        # resumed run continues metrics.jsonl/TensorBoard from the step it restores.
        writer.flush()
        ckpt.save(step, state, host_state(), metrics)

    progress = Progress(spe, num_epochs, config.batch_size)
    carried = runner.put(state)
    step = int(state.step)
    stop_reason = None
    start = time.time()

    def check_finite(nonfinite_step):
        # Replicas agree (pmap carries one value per device), so any one will do.
        bad = int(np.max(jax.device_get(nonfinite_step)))
        if bad >= 0:
            ckpt.wait_until_finished()
            # `bad` counts the updates before the bad loss; the logs (metrics.jsonl,
            # TensorBoard) label that loss with step bad + 1, so name it the same way.
            raise NonFiniteLossError(
                f'Loss is not finite at step {bad + 1} (epoch {bad // spe + 1}); no update was applied '
                f'from that step on. Last good checkpoint: step {ckpt.latest_step()} in '
                f'{ckpt.directory}. Lower optimizer.learning_rate or set optimizer.grad_clip_norm.')

    pending, window_start, epoch_train = [], time.time(), []

    def flush(nonfinite_step):
        nonlocal pending, window_start
        if not pending:
            return
        fetched = jax.device_get(pending)
        first = step - len(fetched)
        for i, m in enumerate(fetched):
            writer.write_scalars(first + i + 1, m, 'train', epoch=(first + i) // spe + 1)
        now = time.time()
        ips = len(fetched) * config.batch_size / max(now - window_start, 1e-9)
        writer.write_scalars(step, {'images_per_second': ips}, 'train')
        epoch_train.extend((float(m['loss']), float(m['accuracy'])) for m in fetched)
        pending, window_start = [], now
        check_finite(nonfinite_step)
        return fetched[-1]

    with _Preemption() as preemption, ckpt:
        last = {}
        for epoch in range(evaluated_epochs, num_epochs):
            if step >= total_steps and step != (epoch + 1) * spe:
                stop_reason = f'max_steps={config.max_steps} reached'
                break
            epoch_start, epoch_train = time.time(), []
            progress.start_epoch(epoch + 1)
            batches = exp.train_data.epoch(epoch)
            for k in range(step - epoch * spe, spe):
                if step >= total_steps or preemption.requested:
                    break
                carried, metrics = runner.step(carried, exp.train_data.batch(batches, k))
                pending.append(metrics)
                step += 1
                if len(pending) >= config.log_every_steps:
                    last = flush(carried.nonfinite_step) or last
                progress.update(k + 1, last)
            state = runner.get(carried)
            flush(state.nonfinite_step)
            if preemption.requested:
                save(state)
                stop_reason = f'preempted (SIGTERM) at step {step}'
                break
            if step < (epoch + 1) * spe:   # max_steps reached mid-epoch
                val = evaluator(eval_variables(state), exp.val_data)
                save(state, _val_record(val, 'val'))
                stop_reason = f'max_steps={config.max_steps} reached'
                break

            # End of epoch: validate, callbacks, checkpoint, logs.
            val = evaluator(eval_variables(state), exp.val_data)
            train_loss, train_acc = (np.mean(epoch_train, axis=0) if epoch_train
                                     else (np.nan, np.nan))
            record = {'epoch': epoch + 1, 'step': step, 'train_loss': float(train_loss),
                      'train_accuracy': float(train_acc), **_val_record(val, 'val'),
                      'lr_scale': float(get_lr_scale(state.opt_state)),
                      'epoch_time_s': time.time() - epoch_start}
            writer.write_scalars(step, {'loss': val['loss'], 'accuracy': val['accuracy']}, 'val',
                                 epoch=epoch + 1)
            writer.write_scalars(step, {'epoch_time_s': record['epoch_time_s']}, 'train',
                                 epoch=epoch + 1)
            stop = False
            if plateau:
                decision = plateau.update(epoch, record, base_lr=float(exp.schedule(step)))
                if decision.reduced:
                    carried = runner.put(state.replace(
                        opt_state=set_lr_scale(state.opt_state, decision.scale)))
                    state = runner.get(carried)
                    log.info('Plateau: learning-rate scale -> %g', decision.scale)
            if early_stopping:
                stop = early_stopping.update(epoch, record).stop
            evaluated_epochs = epoch + 1
            history.append(record)
            if ckpt.should_save(epoch + 1, num_epochs) or stop:
                save(state, record)
            progress.write(
                f'epoch {epoch + 1}/{num_epochs}: train loss {train_loss:.4f} acc {train_acc:.4f}'
                f' | val loss {val["loss"]:.4f} acc {val["accuracy"]:.4f}'
                f' ({val["num_examples"]} examples) | {record["epoch_time_s"]:.0f} s')
            if stop:
                stop_reason = f'early stopping at epoch {epoch + 1}'
                break
        else:
            stop_reason = stop_reason or 'completed'
        state = runner.get(carried)
        if step not in ckpt.all_steps() and stop_reason != 'completed':
            save(state)
        ckpt.wait_until_finished()
        if preemption.requested:
            writer.close()
            log.warning('Stopped: %s. Rerun with the same --workdir to resume.', stop_reason)
            return {'status': 'preempted', 'step': step}
        results = _final_evaluation(exp, ckpt, evaluator, stop_reason, history,
                                    time.time() - start)
    writer.write_hparams(_flat(config.to_dict()), {
        k: v for k, v in _flat(results).items() if isinstance(v, float)})
    writer.close()
    if jax.process_index() == 0:
        (workdir / 'results.json').write_text(json.dumps(results, indent=2))
    return results


def _final_evaluation(exp: Experiment, ckpt: Checkpointer, evaluator: Evaluator,
                      stop_reason: str, history: list, wall_s: float) -> dict:
    """The best checkpoint (by validation accuracy) on validation and test."""
    which = 'best' if ckpt.best_step() is not None else 'latest'
    state, _ = ckpt.restore(exp.state, which, mesh=exp.mesh)
    variables = eval_variables(state)
    results = {'stop_reason': stop_reason, 'checkpoint': which, 'step': int(state.step),
               'epochs_trained': len(history), 'wall_time_s': round(wall_s, 1),
               'class_names': list(exp.class_names)}
    for role, data in (('val', exp.val_data), ('test', exp.test_data)):
        if data is None:
            results[role] = None
            continue
        summary = evaluator(variables, data)
        results[role] = {
            'loss': summary['loss'], 'accuracy': summary['accuracy'],
            'num_examples': summary['num_examples'],
            'per_class_accuracy': dict(zip(exp.class_names,
                                           map(float, summary['per_class_accuracy'])))}
    log.info('Final (%s checkpoint, step %d): %s', which, results['step'],
             {r: results[r] and round(results[r]['accuracy'], 4) for r in ('val', 'test')})
    return results
