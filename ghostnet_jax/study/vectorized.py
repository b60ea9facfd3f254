"""Several runs that differ only in shape-preserving hyperparameters, trained at once: the
models are stacked on a leading axis and one `jax.vmap`ped train_step (the trainer's own)
updates all of them on each shared input batch, in one compiled program.

Each model gets its values as traced scalars: the learning rate and weight decay through
the project's optimizer (`build_optimizer(learning_rate=..., weight_decay=...)`), label
smoothing and the dropout seed through train_step's arguments, the dropout rate through
the model. Runs with different seeds also differ in their initial weights and batch order,
so they each get their own batches (still one program). Every run then gets what
train_and_evaluate writes: config.json, metrics.jsonl/TensorBoard, self-contained
checkpoints (loop state and model spec) and results.json from the weights the trainer's
final-weights rule picks.

Not vectorized (the sweep trains such runs one by one): callbacks that make per-run host
decisions (early stopping, plateau), max_steps, pmap, multi-process runs.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from ghostnet_jax.data.metrics import add_counts, eval_counts, summarize
from ghostnet_jax.models import create_model
from ghostnet_jax.study.grid import get_field
from ghostnet_jax.training import steps
from ghostnet_jax.training.checkpoints import BEST_MARK, Checkpointer
from ghostnet_jax.training.config_checks import check_batch_sizes
from ghostnet_jax.training.experiment import build_experiment, compute_dtype
from ghostnet_jax.training.final_weights import final_weights_rule
from ghostnet_jax.training.loop_state import COMPLETED, BestSoFar, EpochSums, LoopState
from ghostnet_jax.training.model_spec import spec_from_training
from ghostnet_jax.training.metrics_log import MetricsWriter
from ghostnet_jax.training.optim import build_optimizer
from ghostnet_jax.training.parallel import make_mesh
from ghostnet_jax.training.resume_checks import run_identity
from ghostnet_jax.training.state import create_train_state, eval_variables

log = logging.getLogger(__name__)

VECTOR_FIELDS = ('optimizer.learning_rate', 'optimizer.weight_decay', 'label_smoothing',
                 'model.dropout_rate', 'seed')


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


def train_vectorized(configs: list[ml_collections.ConfigDict],
                     workdirs: list[str | Path]) -> list[dict]:
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
    check_batch_sizes(base, mesh.size)
    seeds = sorted({c.seed for c in configs})
    exps = {}
    for s in seeds:
        cfg = base.copy_and_resolve_references()
        cfg.seed = s
        exps[s] = build_experiment(cfg, mesh)
    first = exps[seeds[0]]
    spe, num_epochs = first.train_data.steps_per_epoch, base.num_epochs
    num_classes, k_models = len(first.class_names), len(configs)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), first.state.params)

    hps = {'learning_rate': jnp.asarray([c.optimizer.learning_rate for c in configs], jnp.float32),
           'label_smoothing': jnp.asarray([c.label_smoothing for c in configs], jnp.float32),
           'dropout_rate': jnp.asarray([c.model.dropout_rate for c in configs], jnp.float32),
           'seed': jnp.asarray([c.seed for c in configs], jnp.int32)}
    if 'optimizer.weight_decay' in varying:
        hps['weight_decay'] = jnp.asarray([c.optimizer.weight_decay for c in configs], jnp.float32)

    def optimizer(hp):
        return build_optimizer(base.optimizer, spe, num_epochs, shapes,
                               learning_rate=hp['learning_rate'],
                               weight_decay=hp.get('weight_decay'))

    def model_for(hp):
        if 'model.dropout_rate' not in varying:
            return first.model
        return create_model(base.model.name, num_classes=num_classes,
                            dropout_rate=_TracedRate(hp['dropout_rate']),
                            conv_impl=base.model.conv_impl, dtype=compute_dtype(base.dtype))

    def init_state(c, hp):
        exp = exps[c.seed]
        tx, _ = optimizer(hp)
        return create_train_state({'params': exp.state.params,
                                   'batch_stats': exp.state.batch_stats}, tx, c.ema_decay)

    stacked = _stack([init_state(c, _index(hps, i)) for i, c in enumerate(configs)])

    def one_step(state, batch, hp):
        tx, schedule = optimizer(hp)
        return steps.train_step(state, batch, model=model_for(hp), tx=tx, schedule=schedule,
                                seed=hp['seed'], label_smoothing=hp['label_smoothing'],
                                ema_decay=base.ema_decay)

    per_seed = len(seeds) > 1
    train_step = jax.jit(jax.vmap(one_step, in_axes=(0, 0 if per_seed else None, 0)),
                         donate_argnums=0)

    @jax.jit
    def eval_step(variables, batch, totals):
        def one(v):
            logits = steps.eval_logits(v, batch['image'], model=first.model)
            return eval_counts(logits, batch['label'], batch['mask'], num_classes)
        return add_counts(totals, jax.vmap(one)(variables))

    zeros = jax.tree.map(lambda x: jnp.zeros((k_models, *np.shape(x)), x.dtype), eval_counts(
        jnp.zeros((1, num_classes)), jnp.zeros((1,), jnp.int32), jnp.zeros((1,)), num_classes))

    def evaluate(variables, data) -> list[dict]:
        totals = zeros
        for i in range(data.num_batches):
            totals = eval_step(variables, data.batch(i), totals)
        return [summarize(_index(totals, m)) for m in range(k_models)]

    workdirs = [epath.Path(w) for w in workdirs]
    for c, w in zip(configs, workdirs):
        w.mkdir(parents=True, exist_ok=True)
        (w / 'config.json').write_text(c.to_json_best_effort(indent=2, sort_keys=True))
    writers = [MetricsWriter(w) for w in workdirs]
    ckpts = [Checkpointer.from_config(w, c.checkpoint) for c, w in zip(configs, workdirs)]
    histories: list[list[dict]] = [[] for _ in configs]
    diverged: list[int | None] = [None] * k_models
    # The trainer's own rule for the final weights and its self-contained checkpoints, so a
    # vectorized run is indistinguishable from one trained by train_and_evaluate.
    rule = final_weights_rule(base)
    bests = [BestSoFar(rule.metric, rule.mode) for _ in configs]
    train_data = first.train_data
    specs = [spec_from_training(c, first.class_names, train_data.image_shape, train_data.mean,
                                train_data.std).to_json() for c in configs]
    step = 0
    log.info('Vectorized: %d models (%s vary) in one program, %d epochs of %d steps',
             k_models, ', '.join(sorted(varying)) or 'nothing', num_epochs, spe)
    for epoch in range(num_epochs):
        epoch_start = time.time()
        epochs = {s: exps[s].train_data.epoch(epoch) for s in seeds}
        pending = []
        for k in range(spe):
            if per_seed:
                per_model = [exps[c.seed].train_data.batch(epochs[c.seed], k) for c in configs]
                batch = _stack(per_model)
            else:
                batch = first.train_data.batch(epochs[seeds[0]], k)
            stacked, metrics = train_step(stacked, batch, hps)
            pending.append(metrics)
            step += 1
        fetched = jax.device_get(pending)
        seconds = time.time() - epoch_start
        val = evaluate(eval_variables(stacked), first.val_data)
        bad = np.asarray(jax.device_get(stacked.nonfinite_step))
        for m in range(k_models):
            if diverged[m] is not None:
                continue
            for j, record in enumerate(fetched):
                writers[m].write_scalars(epoch * spe + j + 1, {key: v[m] for key, v in record.items()},
                                         'train', epoch=epoch + 1)
            writers[m].write_scalars(step, {'images_per_second': spe * base.batch_size / seconds},
                                     'train')
            if bad[m] >= 0:
                diverged[m] = int(bad[m]) + 1   # the step whose loss was not finite
                log.error('Run %s: loss is not finite at step %d', workdirs[m], diverged[m])
                continue
            losses = [float(r['loss'][m]) for r in fetched]
            accs = [float(r['accuracy'][m]) for r in fetched]
            record = {'epoch': epoch + 1, 'step': step, 'train_loss': float(np.mean(losses)),
                      'train_accuracy': float(np.mean(accs)), 'val_accuracy': val[m]['accuracy'],
                      'val_loss': val[m]['loss'], 'lr_scale': 1.0, 'epoch_time_s': seconds}
            writers[m].write_scalars(step, {'loss': val[m]['loss'], 'accuracy': val[m]['accuracy']},
                                     'val', epoch=epoch + 1)
            writers[m].write_scalars(step, {'epoch_time_s': seconds}, 'train', epoch=epoch + 1)
            histories[m].append(record)
            improved = bests[m].update(record)
            if ckpts[m].should_save(epoch + 1, num_epochs) or improved:
                writers[m].flush()
                done = epoch + 1 == num_epochs
                loop = LoopState(evaluated_epochs=epoch + 1, history=histories[m],
                                 epoch_sums=EpochSums(epoch + 1), best=bests[m],
                                 stop_kind=COMPLETED if done else None,
                                 stop_reason='completed' if done else None,
                                 identity=run_identity(configs[m]), num_epochs=num_epochs,
                                 model_spec=specs[m])
                ckpts[m].save(step, _index(stacked, m), loop.to_json(),
                              {**record, **({BEST_MARK: 1.0} if improved else {})})
        log.info('epoch %d/%d: %.0f s for %d models; val accuracy %s', epoch + 1, num_epochs,
                 seconds, k_models, [round(v['accuracy'], 4) for v in val])

    # The weights train_and_evaluate would evaluate (training/final_weights.py).
    best_states, which = [], []
    for m, ckpt in enumerate(ckpts):
        ckpt.wait_until_finished()
        use_best = rule.use_best and bests[m].step in ckpt.all_steps()
        w = bests[m].step if use_best else ckpt.latest_step()
        which.append('best' if use_best else 'last')
        if diverged[m] is None:
            best_states.append(ckpt.restore(_index(stacked, m), w, mesh=mesh)[0])
        else:
            best_states.append(_index(stacked, m))
    best = _stack(best_states)
    variables = eval_variables(best)
    finals = {'val': evaluate(variables, first.val_data),
              'test': evaluate(variables, first.test_data) if first.test_data else None}
    wall = time.time() - start
    results = []
    for m, (c, w) in enumerate(zip(configs, workdirs)):
        ckpts[m].close()
        writers[m].close()
        if diverged[m] is not None:
            results.append({'status': 'diverged', 'nonfinite_step': diverged[m]})
            (w / 'diverged.json').write_text(json.dumps(results[-1]))
            continue
        step_m = int(best_states[m].step)
        r = {'stop_reason': 'completed', 'checkpoint': which[m], 'step': step_m,
             'epoch': -(-step_m // spe), 'checkpoint_rule': rule.why,
             'checkpoint_metric': ({rule.metric: bests[m].value} if which[m] == 'best'
                                   else None),
             'epochs_trained': len(histories[m]), 'wall_time_s': round(wall, 1),
             'class_names': list(first.class_names),
             'vectorized': {'models': k_models, 'varying': sorted(varying)}}
        for role in ('val', 'test'):
            if finals[role] is None:
                r[role] = None
                continue
            s = finals[role][m]
            r[role] = {'loss': s['loss'], 'accuracy': s['accuracy'],
                       'num_examples': s['num_examples'],
                       'per_class_accuracy': dict(zip(first.class_names,
                                                      map(float, s['per_class_accuracy'])))}
        (w / 'results.json').write_text(json.dumps(r, indent=2))
        results.append(r)
    return results
