"""The end of a run: the weights the final-weights rule picks (final_weights.py), restored
from their checkpoint and evaluated on validation and test, as results.json holds them."""
from __future__ import annotations

import logging
import math
from typing import Any, Callable

from ghostnet_jax.training.checkpoints import Checkpointer
from ghostnet_jax.training.final_weights import FinalWeightsRule
from ghostnet_jax.training.loop_state import LoopState
from ghostnet_jax.training.state import eval_variables

log = logging.getLogger(__name__)


def _chosen_step(ckpt: Checkpointer, rule: FinalWeightsRule, loop: LoopState) -> tuple[int, str]:
    best, saved = loop.best, ckpt.all_steps()
    if rule.use_best and best is not None and best.step in saved:
        return best.step, 'best'
    if rule.use_best and ckpt.best_step() is not None:
        return ckpt.best_step(), 'best'
    return saved[-1], 'last'


def evaluate_final_weights(ckpt: Checkpointer, exp: Any, rule: FinalWeightsRule,
                           loop: LoopState, evaluator: Callable, wall_s: float) -> dict:
    """results.json of a finished run (`exp` is its `Experiment`)."""
    step, which = _chosen_step(ckpt, rule, loop)
    best = loop.best
    state, _ = ckpt.restore(exp.state, step, mesh=exp.mesh)
    variables = eval_variables(state)
    results = {
        'stop_reason': loop.stop_reason, 'checkpoint': which, 'step': int(state.step),
        'epoch': math.ceil(step / exp.train_data.steps_per_epoch),
        'checkpoint_rule': rule.why if which == 'best' or not rule.use_best
        else f'{rule.why}; no epoch had a finite {rule.metric}: the last weights',
        'checkpoint_metric': ({rule.metric: best.value}
                              if which == 'best' and best is not None and best.step == step
                              else None),
        'epochs_trained': len(loop.history), 'wall_time_s': round(wall_s, 1),
        'time_budget': loop.time_budget,
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
    log.info('Final (%s checkpoint, step %d: %s): %s', which, results['step'],
             results['checkpoint_rule'],
             {r: results[r] and round(results[r]['accuracy'], 4) for r in ('val', 'test')})
    return results
