"""Pre-training sanity checks (Karpathy's recipe): the initial loss is ln(C), the net can
overfit a small fixed sample, and no stage's gradient vanishes or explodes at init.

Each check reports its numbers, the threshold it used and a verdict; `run_sanity` writes
sanity.json and the overfit curve and returns the whole report ('passed' is the AND).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ghostnet_jax.study import plots
from ghostnet_jax.study.probe import build_probe, copy_config

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SanityOptions:
    sample_size: int = 256            # images in the fixed overfit sample
    max_steps: int = 300              # overfit budget
    target_accuracy: float = 0.99     # "~100%": accuracy over one pass of the sample
    init_loss_tolerance: float = 0.25  # |loss - ln C| <= tolerance * ln C
    vanish_ratio: float = 1e-3        # a group below median / 1e3 has vanished
    explode_ratio: float = 1e3        # a group above median * 1e3 has exploded
    shuffle_labels: bool = False      # a control that must fail: labels no longer match images


def sanity_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config with everything that fights memorization off, at a constant learning rate."""
    config = copy_config(config)
    config.data.augment.crop_padding = 0
    config.data.augment.flip = False
    config.data.augment.cutout = 0
    config.model.dropout_rate = 0.0
    config.optimizer.weight_decay = 0.0
    config.label_smoothing = 0.0
    config.ema_decay = 0.0
    config.optimizer.schedule = 'constant'
    config.optimizer.warmup_epochs = 0.0
    return config


def check_initial_loss(loss: float, num_classes: int, tolerance: float) -> dict:
    expected = math.log(num_classes)
    passed = bool(np.isfinite(loss)) and abs(loss - expected) <= tolerance * expected
    return {'name': 'initial_loss', 'passed': passed, 'loss': float(loss),
            'expected': expected, 'tolerance': f'|loss - ln({num_classes})| <= '
                                                f'{tolerance:g} * ln({num_classes}) = '
                                                f'{tolerance * expected:.3f}'}


def check_gradient_norms(norms: dict[str, float], vanish_ratio: float,
                         explode_ratio: float) -> dict:
    """Flags groups far below / above the median group (or not finite), by name."""
    finite = [v for v in norms.values() if np.isfinite(v)]
    median = float(np.median(finite)) if finite else float('nan')
    vanishing = sorted(g for g, v in norms.items()
                       if np.isfinite(v) and (v == 0 or v < median * vanish_ratio))
    exploding = sorted(g for g, v in norms.items()
                       if not np.isfinite(v) or v > median * explode_ratio)
    return {'name': 'gradient_norms', 'passed': not vanishing and not exploding,
            'norms': {g: float(v) for g, v in norms.items()}, 'median': median,
            'vanishing': vanishing, 'exploding': exploding,
            'thresholds': f'vanishing < median * {vanish_ratio:g}, exploding > median * '
                          f'{explode_ratio:g} or not finite'}


def overfit_verdict(accuracy: list[float], sample_batches: int, target: float) -> int | None:
    """First step at which the mean accuracy over the last full pass of the sample reaches
    `target` (1-based step), or None."""
    for end in range(sample_batches, len(accuracy) + 1):
        if np.mean(accuracy[end - sample_batches:end]) >= target:
            return end
    return None


def diverged(losses: list[float], initial_loss: float, factor: float = 4.0) -> bool:
    """The loss is not finite or has grown past `factor` x its initial value."""
    return bool(losses) and (not np.isfinite(losses[-1]) or losses[-1] > factor * initial_loss)


def _fixed_sample(exp, size: int, shuffle_labels: bool, seed: int) -> list[dict]:
    """The first batches of epoch 0 (no augmentation: the same images every pass)."""
    data = exp.train_data
    count = max(1, min(data.steps_per_epoch, -(-size // data.global_batch_size)))
    epoch = data.epoch(0)
    batches = [data.batch(epoch, k) for k in range(count)]
    if shuffle_labels:
        labels = np.concatenate([np.asarray(b['label']) for b in batches])
        labels = np.random.default_rng(seed).permutation(labels)
        parts = np.split(labels, count)
        batches = [dict(b, label=jax.device_put(jnp.asarray(p), b['label'].sharding))
                   for b, p in zip(batches, parts)]
    return batches


def run_sanity(config: ml_collections.ConfigDict, workdir: str | Path,
               options: SanityOptions | None = None) -> dict:
    options = options or SanityOptions()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    config = sanity_config(config)
    probe = build_probe(config)
    exp = probe.exp
    batches = _fixed_sample(exp, options.sample_size, options.shuffle_labels, config.seed)
    sample = len(batches) * exp.train_data.global_batch_size

    # Step 0 on each batch, from the initial state: the loss and gradients training starts with.
    first = [jax.device_get(probe.step(exp.state, b)[1]) for b in batches]
    init_loss = float(np.mean([m['loss'] for m in first]))
    groups = sorted(k for k in first[0] if k.startswith('grad_norm/'))
    norms = {k.split('/', 1)[1]: float(np.mean([m[k] for m in first])) for k in groups}
    checks = [check_initial_loss(init_loss, len(exp.class_names), options.init_loss_tolerance),
              check_gradient_norms(norms, options.vanish_ratio, options.explode_ratio)]

    state, losses, accuracy, reached = exp.state, [], [], None
    for i in range(options.max_steps):
        state, metrics = probe.step(state, batches[i % len(batches)])
        m = jax.device_get(metrics)
        losses.append(float(m['loss']))
        accuracy.append(float(m['accuracy']))
        if diverged(losses, init_loss):
            break    # no point in spending the rest of the budget
        reached = overfit_verdict(accuracy, len(batches), options.target_accuracy)
        if reached is not None:
            break
    curve = [float(np.mean(accuracy[max(0, e - len(batches)):e])) for e in range(1, len(accuracy) + 1)]
    overfit = {'name': 'overfit', 'passed': reached is not None, 'sample_size': sample,
               'target_accuracy': options.target_accuracy, 'steps_to_target': reached,
               'steps_run': len(losses), 'final_loss': losses[-1] if losses else None,
               'final_accuracy': curve[-1] if curve else None,
               'diverged': diverged(losses, init_loss), 'initial_loss': init_loss,
               'labels_shuffled': options.shuffle_labels,
               'learning_rate': float(config.optimizer.learning_rate)}
    checks.append(overfit)
    plots.overfit_curve(range(1, len(losses) + 1), [v if np.isfinite(v) else np.nan for v in losses],
                        curve, options.target_accuracy, reached, workdir / 'sanity_overfit.png')
    report = {'passed': all(c['passed'] for c in checks), 'checks': checks,
              'model': config.model.name, 'num_classes': len(exp.class_names),
              'batch_size': config.batch_size, 'wall_time_s': round(time.time() - start, 1)}
    (workdir / 'sanity.json').write_text(json.dumps(report, indent=2, allow_nan=True))
    return report


def summary_text(report: dict) -> str:
    """The human-readable verdicts, one block per check."""
    c = {check['name']: check for check in report['checks']}
    ok = lambda check: 'PASS' if check['passed'] else 'FAIL'
    loss, grads, fit = c['initial_loss'], c['gradient_norms'], c['overfit']
    lines = [f'[{ok(loss)}] initial loss {loss["loss"]:.4f} vs ln({report["num_classes"]}) = '
             f'{loss["expected"]:.4f} (tolerance: {loss["tolerance"]})']
    lines.append(f'[{ok(grads)}] gradient norms at init (median {grads["median"]:.3g}; '
                 f'{grads["thresholds"]}):')
    for group, value in grads['norms'].items():
        flag = (' <- VANISHING' if group in grads['vanishing'] else
                ' <- EXPLODING' if group in grads['exploding'] else '')
        lines.append(f'         {group:>8s} {value:.3e}{flag}')
    if fit['passed']:
        lines.append(f'[PASS] overfit {fit["sample_size"]} fixed images: '
                     f'{fit["target_accuracy"]:.0%} training accuracy after '
                     f'{fit["steps_to_target"]} steps (lr {fit["learning_rate"]:g})')
    else:
        why = (f'the loss diverged: {fit["final_loss"]:.4g} vs {fit["initial_loss"]:.4g} at init'
               if fit['diverged'] else
               f'accuracy {fit["final_accuracy"]:.3f}, loss {fit["final_loss"]:.4g} after '
               f'{fit["steps_run"]} steps')
        lines.append(f'[FAIL] overfit {fit["sample_size"]} fixed images: never reached '
                     f'{fit["target_accuracy"]:.0%} ({why}, lr {fit["learning_rate"]:g}'
                     + (', labels shuffled' if fit['labels_shuffled'] else '') + ')')
    lines.append('SANITY ' + ('PASSED' if report['passed'] else
                              'FAILED: ' + ', '.join(k for k, v in c.items() if not v['passed'])))
    return '\n'.join(lines)
