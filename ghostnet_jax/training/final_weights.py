"""Which weights the end of training evaluates (results.json): one rule.

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

import ml_collections


@dataclasses.dataclass(frozen=True)
class FinalWeightsRule:
    use_best: bool       # False: the last weights
    metric: str          # ranking metric of the kept "best" checkpoint
    mode: str            # 'max' or 'min'
    why: str             # the rule in words, for results.json and the log


def _mode(mode: str, metric: str) -> str:
    if mode == 'auto':
        return 'max' if 'acc' in metric else 'min'
    return mode


def final_weights_rule(config: ml_collections.ConfigDict) -> FinalWeightsRule:
    es = config.callbacks.early_stopping
    ckpt = config.checkpoint
    if es.enabled and es.restore_best:
        mode = _mode(es.mode, es.monitor)
        return FinalWeightsRule(True, es.monitor, mode,
                                f'early_stopping.restore_best: the epoch with the best '
                                f'{es.monitor} ({mode})')
    if es.enabled:
        return FinalWeightsRule(False, ckpt.best_metric, ckpt.best_mode,
                                'early_stopping.restore_best=False: the last weights')
    return FinalWeightsRule(True, ckpt.best_metric, ckpt.best_mode,
                            f'checkpoint.best_metric: the epoch with the best '
                            f'{ckpt.best_metric} ({ckpt.best_mode})')
