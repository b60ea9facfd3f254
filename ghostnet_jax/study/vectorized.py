"""Several runs that differ only in shape-preserving hyperparameters, trained at once: the
models are stacked on a leading axis and one `jax.vmap`ped train_step (the trainer's own)
updates all of them on each shared input batch, in one compiled program.

Each model gets its values as traced scalars: the learning rate and weight decay through
the project's optimizer (`build_optimizer(learning_rate=..., weight_decay=...)`), label
smoothing and the dropout seed through train_step's arguments, the dropout rate through
the model. Runs with different seeds also differ in their initial weights and batch order,
so they each get their own batches (still one program). The steps run in the trainer's
own epoch loop (`training.epoch_loop`), and every run is written by the trainer's
`RunRecord`: config.json, metrics.jsonl/TensorBoard, self-contained checkpoints (loop
state and model spec), results.json from the weights the final-weights rule picks.

Not vectorized (the sweep trains such runs one by one): callbacks that make per-run host
decisions (early stopping, plateau), max_steps, pmap, multi-process runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from ghostnet_jax.data.metrics import ExactEvaluator, steps_in_flight
from ghostnet_jax.models import create_model
from ghostnet_jax.study.grid import get_field
from ghostnet_jax.training import steps
from ghostnet_jax.training.epoch_loop import run_epoch
from ghostnet_jax.training.evaluation import evaluator
from ghostnet_jax.training.experiment import build_experiment, compute_dtype
from ghostnet_jax.training.loop_state import COMPLETED
from ghostnet_jax.training.model_spec import spec_from_training
from ghostnet_jax.training.optim import build_optimizer
from ghostnet_jax.training.parallel import make_mesh
from ghostnet_jax.training.run_record import RunRecord, epoch_record
from ghostnet_jax.training.state import create_train_state, eval_variables

log = logging.getLogger(__name__)

VECTOR_FIELDS = (
    'optimizer.learning_rate',
    'optimizer.weight_decay',
    'label_smoothing',
    'model.dropout_rate',
    'seed',
)


def why_not_vectorized(config: ml_collections.ConfigDict) -> str | None:
    """Why runs of this config must train one by one, or None."""
    if config.callbacks.early_stopping.enabled or config.callbacks.reduce_lr_on_plateau.enabled:
        return 'early stopping / plateau decide per run on the host'
    if config.max_steps:
        return 'max_steps is set'
    if config.get('time_budget_minutes'):
        return 'time_budget_minutes fits each run to its own measured step time'
    if (config.data.get('low_res') or {}).get('size'):
        return 'data.low_res trains the first epochs at another image size'
    if config.parallel != 'jit':
        return f'parallel={config.parallel!r} (vectorized runs use jit)'
    if jax.process_count() > 1:
        return 'multi-process run'
    return None


def without_vector_fields(config: ml_collections.ConfigDict) -> dict:
    """The config as a dict without VECTOR_FIELDS: runs equal in it can train together."""
    d = config.to_dict()
    for field in VECTOR_FIELDS:
        *parents, leaf = field.split('.')
        node = d
        for part in parents:
            node = node[part]
        node.pop(leaf)
    return d


class _TracedRate:
    """One model's dropout rate as a traced value. Flax's Dropout asks `rate == 0.0` in
    Python to skip the mask; a tracer cannot answer, so this says "no": a rate of 0 then
    draws an all-ones mask (keep probability 1), the same values as skipping."""

    def __init__(self, value: jax.Array):
        self.value = value

    def __eq__(self, other):
        return False

    def __hash__(self):
        return id(self)

    def __rsub__(self, other):
        return other - self.value


def _stack(trees: list):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _index(tree, i: int):
    return jax.tree.map(lambda x: x[i], tree)


class _StackedStep:
    """The vmapped train step of every model, as the epoch loop drives a runner."""

    def __init__(self, step):
        self._step = step

    def step(self, carried, batch):
        return self._step(carried, batch)


def write_divergence(workdir: str | Path | epath.Path, results: dict) -> None:
    """diverged.json: a run whose loss became non-finite (a resumed sweep skips it)."""
    (epath.Path(workdir) / 'diverged.json').write_text(json.dumps(results))


def train_vectorized(
    configs: list[ml_collections.ConfigDict], workdirs: list[str | Path]
) -> list[dict]:
    """Trains every config (differing only in VECTOR_FIELDS) into its workdir; returns each
    run's results dict, in the format of train_and_evaluate."""
    base = configs[0]
    reason = why_not_vectorized(base)
    if reason:
        raise ValueError(f'cannot vectorize: {reason}')
    shared = without_vector_fields(base)
    for c in configs[1:]:
        if without_vector_fields(c) != shared:
            raise ValueError('vectorized runs may differ only in ' + ', '.join(VECTOR_FIELDS))
    varying = {f for f in VECTOR_FIELDS if len({get_field(c, f) for c in configs}) > 1}
    start = time.time()
    mesh = make_mesh()
    seeds = sorted({c.seed for c in configs})
    experiments = {}
    for s in seeds:
        cfg = base.copy_and_resolve_references()
        cfg.seed = s
        experiments[s] = build_experiment(cfg, mesh)
    first = experiments[seeds[0]]
    steps_per_epoch, num_epochs = first.train_data.steps_per_epoch, base.num_epochs
    num_classes, k_models = len(first.class_names), len(configs)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), first.state.params)

    hps = {
        'learning_rate': jnp.asarray([c.optimizer.learning_rate for c in configs], jnp.float32),
        'label_smoothing': jnp.asarray([c.label_smoothing for c in configs], jnp.float32),
        'dropout_rate': jnp.asarray([c.model.dropout_rate for c in configs], jnp.float32),
        'seed': jnp.asarray([c.seed for c in configs], jnp.int32),
    }
    if 'optimizer.weight_decay' in varying:
        hps['weight_decay'] = jnp.asarray([c.optimizer.weight_decay for c in configs], jnp.float32)

    def optimizer(hp):
        return build_optimizer(
            base.optimizer,
            steps_per_epoch,
            num_epochs,
            shapes,
            learning_rate=hp['learning_rate'],
            weight_decay=hp.get('weight_decay'),
        )

    def model_for(hp):
        if 'model.dropout_rate' not in varying:
            return first.model
        return create_model(
            base.model.name,
            num_classes=num_classes,
            dropout_rate=_TracedRate(hp['dropout_rate']),
            conv_impl=base.model.conv_impl,
            dtype=compute_dtype(base.dtype),
        )

    def init_state(c, hp):
        experiment = experiments[c.seed]
        tx, _ = optimizer(hp)
        return create_train_state(
            {'params': experiment.state.params, 'batch_stats': experiment.state.batch_stats},
            tx,
            c.ema_decay,
        )

    stacked = _stack([init_state(c, _index(hps, i)) for i, c in enumerate(configs)])

    def one_step(state, batch, hp):
        tx, schedule = optimizer(hp)
        return steps.train_step(
            state,
            batch,
            model=model_for(hp),
            tx=tx,
            schedule=schedule,
            seed=hp['seed'],
            label_smoothing=hp['label_smoothing'],
            ema_decay=base.ema_decay,
        )

    per_seed = len(seeds) > 1
    train_step = jax.jit(
        jax.vmap(one_step, in_axes=(0, 0 if per_seed else None, 0)), donate_argnums=0
    )
    runner = _StackedStep(lambda state, batch: train_step(state, batch, hps))
    flip = bool(base.get('eval_flip', False))
    validate = ExactEvaluator(
        functools.partial(steps.eval_logits, model=first.model, flip=flip),
        num_classes,
        stacked=True,
    )

    train_data = first.train_data
    records = []
    for c, w in zip(configs, workdirs):
        spec = spec_from_training(
            c, first.class_names, train_data.image_shape, train_data.mean, train_data.std
        )
        record = RunRecord(w, c, spec)
        record.start(num_epochs)
        record.open()
        records.append(record)
    diverged: list[dict | None] = [None] * k_models
    log.info(
        'Vectorized: %d models (%s vary) in one program, %d epochs of %d steps',
        k_models,
        ', '.join(sorted(varying)) or 'nothing',
        num_epochs,
        steps_per_epoch,
    )
    for epoch in range(num_epochs):
        epoch_start = time.time()
        epochs = {s: experiments[s].train_data.epoch(epoch) for s in seeds}

        def batch_at(k: int) -> dict:
            if per_seed:
                return _stack(
                    [experiments[c.seed].train_data.batch(epochs[c.seed], k) for c in configs]
                )
            return train_data.batch(epochs[seeds[0]], k)

        def on_sync(done: int, fetched: list[dict], last: bool) -> None:
            first_step = epoch * steps_per_epoch + done - len(fetched)
            for m, record in enumerate(records):
                if diverged[m] is not None:
                    continue
                mine = [{key: v[m] for key, v in r.items()} for r in fetched]
                bad = next((i for i, r in enumerate(mine) if not np.isfinite(r['loss'])), None)
                record.write_steps(first_step, mine[:bad], steps_per_epoch)
                if bad is not None:  # the step whose loss was not finite
                    step = first_step + bad + 1
                    diverged[m] = {
                        'status': 'diverged',
                        'nonfinite_step': step,
                        'message': f'Loss is not finite at step {step}.',
                    }
                    log.error('Run %s: loss is not finite at step %d', record.workdir, step)
            return None

        done = run_epoch(
            runner,
            stacked,
            batch_at,
            0,
            steps_per_epoch,
            sync_every=base.log_every_steps,
            steps_before=epoch * steps_per_epoch,
            max_in_flight=steps_in_flight(),
            on_sync=on_sync,
        )
        stacked, step = done.carried, (epoch + 1) * steps_per_epoch
        val = validate(eval_variables(stacked), first.val_data)
        seconds = time.time() - epoch_start
        for m, record in enumerate(records):
            if diverged[m] is not None:
                continue
            row = epoch_record(epoch + 1, step, record.loop.epoch_sums, val[m], 1.0, seconds)
            record.writer.write_scalars(
                step, {'images_per_second': steps_per_epoch * base.batch_size / seconds}, 'train'
            )
            improved = record.end_epoch(row, train_data.image_shape[0])
            if epoch + 1 == num_epochs:
                record.set_stop(COMPLETED, 'completed')
            if record.ckpt.should_save(epoch + 1, num_epochs) or improved:
                record.save(step, _index(stacked, m), row, improved)
        log.info(
            'epoch %d/%d: %.0f s for %d models; val accuracy %s',
            epoch + 1,
            num_epochs,
            seconds,
            k_models,
            [round(v['accuracy'], 4) for v in val],
        )

    # Each run's end as the trainer writes it: the final-weights rule, results.json.
    wall = time.time() - start
    results = []
    for m, (record, c) in enumerate(zip(records, configs)):
        if diverged[m] is not None:
            record.ckpt.close()
            record.close()
            write_divergence(record.workdir, diverged[m])
            results.append(diverged[m])
            continue
        template = dataclasses.replace(first, state=_index(stacked, m))
        with record.ckpt:
            results.append(
                record.finish(
                    template,
                    evaluator(first.model, num_classes, flip=flip),
                    wall,
                    extra={'vectorized': {'models': k_models, 'varying': sorted(varying)}},
                )
            )
    return results
