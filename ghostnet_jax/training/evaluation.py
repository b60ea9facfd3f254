"""Evaluation, the one way every part of the project does it, and the end of a run.

`evaluator(model, num_classes, flip)`: the project's `ExactEvaluator` (data/metrics.py)
applied to a model in eval mode, `flip` averaging each image with its mirror
(config.eval_flip). The trainer validates with it; `evaluate`, `load`, the sweep and the
report compute what results.json says because they use it too.

Which weights the end of training evaluates (results.json) is one rule:

1. Early stopping enabled with `restore_best=True` (Keras' restore_best_weights): the
   epoch best by early stopping's own monitor and mode, whether or not it fired.
2. Early stopping enabled with `restore_best=False`: the final weights, as Keras keeps
   them.
3. Early stopping off: the epoch best by `checkpoint.best_metric` / `best_mode`.

The loop saves a checkpoint whenever the ranking metric improves, and the checkpointer
ranks its kept "best" by the same metric, so the chosen epoch always has a checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any, Callable

import ml_collections

from ghostnet_jax.data.metrics import ExactEvaluator
from ghostnet_jax.training import steps
from ghostnet_jax.training.checkpoints import Checkpointer
from ghostnet_jax.training.loop_state import LoopState
from ghostnet_jax.training.state import eval_variables

log = logging.getLogger(__name__)


def evaluator(model, num_classes: int, flip: bool = False) -> ExactEvaluator:
    """The project's one evaluator applied to `model` in eval mode (`flip`: average with
    the mirrored images, config.eval_flip): `evaluator(...)(variables, data)` -> summary."""
    return ExactEvaluator(functools.partial(steps.eval_logits, model=model, flip=flip), num_classes)


@dataclasses.dataclass(frozen=True)
class FinalWeightsRule:
    use_best: bool  # False: the last weights
    metric: str  # ranking metric of the kept "best" checkpoint
    mode: str  # 'max' or 'min'
    why: str  # the rule in words, for results.json and the log


def _mode(mode: str, metric: str) -> str:
    if mode == 'auto':
        return 'max' if 'acc' in metric else 'min'
    return mode


def final_weights_rule(config: ml_collections.ConfigDict) -> FinalWeightsRule:
    es = config.callbacks.early_stopping
    ckpt = config.checkpoint
    if es.enabled and es.restore_best:
        mode = _mode(es.mode, es.monitor)
        return FinalWeightsRule(
            True,
            es.monitor,
            mode,
            f'early_stopping.restore_best: the epoch with the best {es.monitor} ({mode})',
        )
    if es.enabled:
        return FinalWeightsRule(
            False,
            ckpt.best_metric,
            ckpt.best_mode,
            'early_stopping.restore_best=False: the last weights',
        )
    return FinalWeightsRule(
        True,
        ckpt.best_metric,
        ckpt.best_mode,
        f'checkpoint.best_metric: the epoch with the best {ckpt.best_metric} ({ckpt.best_mode})',
    )


def _chosen_step(ckpt: Checkpointer, rule: FinalWeightsRule, loop: LoopState) -> tuple[int, str]:
    best, saved = loop.best, ckpt.all_steps()
    if rule.use_best and best is not None and best.step in saved:
        return best.step, 'best'
    if rule.use_best and ckpt.best_step() is not None:
        return ckpt.best_step(), 'best'
    return saved[-1], 'last'


def evaluate_final_weights(
    ckpt: Checkpointer,
    experiment: Any,
    rule: FinalWeightsRule,
    loop: LoopState,
    evaluator: Callable,
    wall_s: float,
) -> dict:
    """results.json of a finished run (`experiment` is its `Experiment`)."""
    step, which = _chosen_step(ckpt, rule, loop)
    best = loop.best
    state, _ = ckpt.restore(experiment.state, step, mesh=experiment.mesh)
    variables = eval_variables(state)
    results = {
        'stop_reason': loop.stop_reason,
        'checkpoint': which,
        'step': int(state.step),
        'epoch': math.ceil(step / experiment.train_data.steps_per_epoch),
        'checkpoint_rule': rule.why
        if which == 'best' or not rule.use_best
        else f'{rule.why}; no epoch had a finite {rule.metric}: the last weights',
        'checkpoint_metric': (
            {rule.metric: best.value}
            if which == 'best' and best is not None and best.step == step
            else None
        ),
        'epochs_trained': len(loop.history),
        'wall_time_s': round(wall_s, 1),
        'time_budget': loop.time_budget,
        'class_names': list(experiment.class_names),
    }
    for role, data in (('val', experiment.val_data), ('test', experiment.test_data)):
        if data is None:
            results[role] = None
            continue
        summary = evaluator(variables, data)
        results[role] = {
            'loss': summary['loss'],
            'accuracy': summary['accuracy'],
            'num_examples': summary['num_examples'],
            'per_class_accuracy': dict(
                zip(experiment.class_names, map(float, summary['per_class_accuracy']))
            ),
        }
    log.info(
        'Final (%s checkpoint, step %d: %s): %s',
        which,
        results['step'],
        results['checkpoint_rule'],
        {r: results[r] and round(results[r]['accuracy'], 4) for r in ('val', 'test')},
    )
    return results
