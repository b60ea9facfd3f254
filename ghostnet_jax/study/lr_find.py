"""LR range test (Smith 2017): train from the config's initial state while the learning rate
grows exponentially each step, smooth the loss, stop once it diverges, and suggest a rate.

Rule: the learning rate at the minimum of the smoothed loss, divided by 10 (the minimum
itself is already on the edge of instability). The steepest-descent point is reported too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from ghostnet_jax.study import plots
from ghostnet_jax.study.probe import build_probe, copy_config

RULE = 'min smoothed loss / 10'


@dataclasses.dataclass
class LRFindOptions:
    min_lr: float = 1e-6
    max_lr: float = 10.0
    num_steps: int = 200
    smoothing: float = 0.9  # EMA factor of the loss (bias-corrected)
    divergence: float = 4.0  # stop when smoothed loss > divergence * best smoothed loss

    def problem(self) -> str | None:
        """Why these options cannot make a range test, or None (checked before any work)."""
        if not 0 < self.min_lr < self.max_lr:
            return (
                f'the learning-rate range must grow: 0 < --min-lr < --max-lr, got '
                f'--min-lr={self.min_lr:g} --max-lr={self.max_lr:g}'
                + (' (swap them?)' if 0 < self.max_lr < self.min_lr else '')
                + '.'
            )
        if self.num_steps < 3:
            return f'--num-steps must be at least 3 to suggest a rate, got {self.num_steps}.'
        if not 0 <= self.smoothing < 1:
            return f'--smoothing is an EMA factor in [0, 1), got {self.smoothing:g}.'
        return None


def ramp(options: LRFindOptions) -> np.ndarray:
    """lr[i] = min_lr * (max_lr / min_lr) ** (i / (num_steps - 1)), i = 0 .. num_steps - 1."""
    return np.geomspace(options.min_lr, options.max_lr, options.num_steps)


def smooth(losses: list[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average (the first values are not pulled to 0)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**i))
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> dict:
    finite = [i for i, v in enumerate(smoothed) if math.isfinite(v)]
    if len(finite) < 3:
        return {'learning_rate': None, 'rule': RULE, 'steepest': None}
    best = min(finite, key=lambda i: smoothed[i])
    # Steepest descent in loss per decade of learning rate, before the minimum.
    slopes = np.gradient(
        np.asarray([smoothed[i] for i in finite]), np.log10([lrs[i] for i in finite])
    )
    before = [k for k, i in enumerate(finite) if i <= best] or [0]
    steepest = finite[min(before, key=lambda k: slopes[k])]
    return {
        'learning_rate': lrs[best] / 10,
        'rule': RULE,
        'min_loss_lr': lrs[best],
        'min_smoothed_loss': smoothed[best],
        'steepest': lrs[steepest],
    }


def lr_find_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The ramp replaces the schedule: constant base, no warmup, no plateau callback."""
    config = copy_config(config)
    config.optimizer.schedule = 'constant'
    config.optimizer.warmup_epochs = 0.0
    return config


def run_lr_find(
    config: ml_collections.ConfigDict, workdir: str | Path, options: LRFindOptions | None = None
) -> dict:
    options = options or LRFindOptions()
    if options.problem():
        raise ValueError(options.problem())
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    config = lr_find_config(config)
    lr_of = ramp(options)
    probe = build_probe(config)
    data = probe.experiment.train_data
    state, lrs, losses, smoothed, stop = probe.experiment.state, [], [], [], 'ramp finished'
    epoch, batches = 0, data.epoch(0)
    for i in range(options.num_steps):
        k = i % data.steps_per_epoch
        if i and k == 0:
            epoch += 1
            batches.close()
            batches = data.epoch(epoch)
        state, metrics = probe.step(state, data.batch(batches, k), lr_of[i])
        m = jax.device_get(metrics)
        lrs.append(float(m['learning_rate']))
        losses.append(float(m['loss']))
        if not math.isfinite(losses[-1]):
            smoothed.append(float('nan'))
            stop = f'loss not finite at lr {lrs[-1]:.3g}'
            break
        smoothed.append(smooth(losses, options.smoothing)[-1])
        if i > 5 and smoothed[-1] > options.divergence * min(smoothed):
            stop = (
                f'diverged at lr {lrs[-1]:.3g} '
                f'(smoothed loss > {options.divergence:g}x its minimum)'
            )
            break
    suggestion = suggest(lrs, smoothed)
    result = {
        'suggestion': suggestion,
        'stop_reason': stop,
        'steps': len(lrs),
        'options': dataclasses.asdict(options),
        'optimizer': config.optimizer.name,
        'batch_size': config.batch_size,
        'model': config.model.name,
        'learning_rate': lrs,
        'loss': losses,
        'smoothed_loss': smoothed,
        'wall_time_s': round(time.time() - start, 1),
    }
    (workdir / 'lr_find.json').write_text(json.dumps(result, indent=2))
    plots.lr_range(
        lrs,
        [v if math.isfinite(v) else np.nan for v in losses],
        smoothed,
        suggestion['learning_rate'],
        RULE,
        workdir / 'lr_find.png',
    )
    return result
