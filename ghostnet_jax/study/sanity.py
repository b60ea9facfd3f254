"""Pre-training sanity checks (Karpathy's recipe): the initial loss is ln(C), the net can
overfit a small fixed sample, and no stage's gradient vanishes or explodes at init.

The overfit check is deterministic: one fixed batch of the config's own (unaugmented)
training images, the same batch every step, so the loss curve is the model's alone, not
the noise of changing batches and BatchNorm statistics. It trains with the config's
optimizer and peak learning rate, held constant, without weight decay, dropout, label
smoothing or augmentation. The sample and the step budget are sized to the model
(`default_sample_size`), so that a healthy model of any size passes on real images and a
broken setup (labels that do not match the images, a learning rate that blows up) does not.

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


def default_sample_size(num_params: int, num_devices: int = 1) -> int:
    """Images in the fixed overfit sample: 32 for models up to ~1M parameters, 64 above
    (measured on real CIFAR-10 images: docs/method.md), a multiple of the device count."""
    size = 32 if num_params <= 1_000_000 else 64
    return -(-size // num_devices) * num_devices


def default_max_steps(sample_size: int) -> int:
    """The overfit budget for a sample: healthy models reached 99% in far fewer steps on
    real CIFAR-10 images (docs/method.md); labels that do not match the images did not."""
    return 4 * sample_size


@dataclasses.dataclass
class SanityOptions:
    sample_size: int | None = None  # images in the fixed batch (None: default_sample_size)
    max_steps: int | None = None  # overfit budget (None: default_max_steps)
    target_accuracy: float = 0.99  # "~100%": training accuracy on the fixed batch
    init_loss_tolerance: float = 0.25  # |loss - ln C| <= tolerance * ln C
    vanish_ratio: float = 1e-3  # a group below median / 1e3 has vanished
    explode_ratio: float = 1e3  # a group above median * 1e3 has exploded
    # A control that must fail: the labels are permuted anew at every step, as when images
    # and labels are shuffled separately (a fixed wrong mapping could be memorized).
    shuffle_labels: bool = False


def sanity_config(
    config: ml_collections.ConfigDict, sample_size: int | None = None
) -> ml_collections.ConfigDict:
    """The config with everything that fights memorization off, at a constant learning
    rate, with batches of the sample's size."""
    config = copy_config(config)
    if sample_size:
        config.batch_size = sample_size
    config.data.augment.crop_padding = 0
    config.data.augment.flip = False
    config.data.augment.cutout = 0
    config.data.augment.trivial_augment = False
    config.data.augment.random_erasing = 0.0
    config.data.augment.mixup_alpha = config.data.augment.cutmix_alpha = 0.0
    config.data.low_res.size = 0
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
    return {
        'name': 'initial_loss',
        'passed': passed,
        'loss': float(loss),
        'expected': expected,
        'tolerance': f'|loss - ln({num_classes})| <= '
        f'{tolerance:g} * ln({num_classes}) = '
        f'{tolerance * expected:.3f}',
    }


def check_gradient_norms(
    norms: dict[str, float], vanish_ratio: float, explode_ratio: float
) -> dict:
    """Flags groups far below / above the median group (or not finite), by name."""
    finite = [v for v in norms.values() if np.isfinite(v)]
    median = float(np.median(finite)) if finite else float('nan')
    vanishing = sorted(
        g for g, v in norms.items() if np.isfinite(v) and (v == 0 or v < median * vanish_ratio)
    )
    exploding = sorted(
        g for g, v in norms.items() if not np.isfinite(v) or v > median * explode_ratio
    )
    return {
        'name': 'gradient_norms',
        'passed': not vanishing and not exploding,
        'norms': {g: float(v) for g, v in norms.items()},
        'median': median,
        'vanishing': vanishing,
        'exploding': exploding,
        'thresholds': f'vanishing < median * {vanish_ratio:g}, exploding > median * '
        f'{explode_ratio:g} or not finite',
    }


def overfit_verdict(accuracy: list[float], sample_batches: int, target: float) -> int | None:
    """First step at which the mean accuracy over the last full pass of the sample reaches
    `target` (1-based step), or None."""
    for end in range(sample_batches, len(accuracy) + 1):
        if np.mean(accuracy[end - sample_batches : end]) >= target:
            return end
    return None


def diverged(losses: list[float], initial_loss: float, factor: float = 4.0) -> bool:
    """The loss is not finite or has grown past `factor` x its initial value."""
    return bool(losses) and (not np.isfinite(losses[-1]) or losses[-1] > factor * initial_loss)


def _fixed_batch(experiment) -> dict:
    """The first batch of epoch 0 (no augmentation: the same images every step)."""
    data = experiment.train_data
    return data.batch(data.epoch(0), 0)


def _with_labels_shuffled(batch: dict, seed: int, step: int) -> dict:
    """`batch` with its labels permuted by (seed, step): labels that follow no image."""
    labels = np.random.default_rng([seed, step]).permutation(np.asarray(batch['label']))
    return dict(batch, label=jax.device_put(jnp.asarray(labels), batch['label'].sharding))


def _num_params(config: ml_collections.ConfigDict) -> int:
    from ghostnet_jax.models import create_model
    from ghostnet_jax.models.layer_table import native_input_size

    model = create_model(config.model.name, num_classes=10)
    size = config.data.get('image_size') or native_input_size(config.model.name)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)
    )
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes['params'])))


def run_sanity(
    config: ml_collections.ConfigDict, workdir: str | Path, options: SanityOptions | None = None
) -> dict:
    options = options or SanityOptions()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    sample = options.sample_size or default_sample_size(_num_params(config), jax.device_count())
    max_steps = options.max_steps or default_max_steps(sample)
    config = sanity_config(config, sample)
    probe = build_probe(config)
    experiment = probe.experiment
    batch = _fixed_batch(experiment)

    # Step 0 from the initial state: the loss and gradients training starts with.
    first = jax.device_get(probe.step(experiment.state, batch)[1])
    init_loss = float(first['loss'])
    groups = sorted(k for k in first if k.startswith('grad_norm/'))
    norms = {k.split('/', 1)[1]: float(first[k]) for k in groups}
    checks = [
        check_initial_loss(init_loss, len(experiment.class_names), options.init_loss_tolerance),
        check_gradient_norms(norms, options.vanish_ratio, options.explode_ratio),
    ]

    state, losses, accuracy, reached = experiment.state, [], [], None
    for i in range(max_steps):
        step_batch = (
            _with_labels_shuffled(batch, config.seed, i) if options.shuffle_labels else batch
        )
        state, metrics = probe.step(state, step_batch)
        m = jax.device_get(metrics)
        losses.append(float(m['loss']))
        accuracy.append(float(m['accuracy']))
        if diverged(losses, init_loss):
            break  # no point in spending the rest of the budget
        reached = overfit_verdict(accuracy, 1, options.target_accuracy)
        if reached is not None:
            break
    overfit = {
        'name': 'overfit',
        'passed': reached is not None,
        'sample_size': sample,
        'max_steps': max_steps,
        'target_accuracy': options.target_accuracy,
        'steps_to_target': reached,
        'steps_run': len(losses),
        'final_loss': losses[-1] if losses else None,
        'final_accuracy': accuracy[-1] if accuracy else None,
        'diverged': diverged(losses, init_loss),
        'initial_loss': init_loss,
        'labels_shuffled': options.shuffle_labels,
        'optimizer': f'{config.optimizer.name}, constant',
        'learning_rate': float(config.optimizer.learning_rate),
    }
    checks.append(overfit)
    plots.overfit_curve(
        range(1, len(losses) + 1),
        [v if np.isfinite(v) else np.nan for v in losses],
        accuracy,
        options.target_accuracy,
        reached,
        workdir / 'sanity_overfit.png',
    )
    report = {
        'passed': all(c['passed'] for c in checks),
        'checks': checks,
        'model': config.model.name,
        'num_classes': len(experiment.class_names),
        'batch_size': config.batch_size,
        'wall_time_s': round(time.time() - start, 1),
    }
    (workdir / 'sanity.json').write_text(json.dumps(report, indent=2, allow_nan=True))
    return report


def summary_text(report: dict) -> str:
    """The human-readable verdicts, one block per check."""
    c = {check['name']: check for check in report['checks']}
    ok = lambda check: 'PASS' if check['passed'] else 'FAIL'
    loss, grads, fit = c['initial_loss'], c['gradient_norms'], c['overfit']
    lines = [
        f'[{ok(loss)}] initial loss {loss["loss"]:.4f} vs ln({report["num_classes"]}) = '
        f'{loss["expected"]:.4f} (tolerance: {loss["tolerance"]})'
    ]
    lines.append(
        f'[{ok(grads)}] gradient norms at init (median {grads["median"]:.3g}; '
        f'{grads["thresholds"]}):'
    )
    for group, value in grads['norms'].items():
        flag = (
            ' <- VANISHING'
            if group in grads['vanishing']
            else ' <- EXPLODING'
            if group in grads['exploding']
            else ''
        )
        lines.append(f'         {group:>8s} {value:.3e}{flag}')
    how = f'{fit.get("optimizer", "")} lr {fit["learning_rate"]:g}'.strip()
    if fit['passed']:
        lines.append(
            f'[PASS] overfit {fit["sample_size"]} fixed images: '
            f'{fit["target_accuracy"]:.0%} training accuracy after '
            f'{fit["steps_to_target"]} steps ({how})'
        )
    else:
        why = (
            f'the loss diverged: {fit["final_loss"]:.4g} vs {fit["initial_loss"]:.4g} at init'
            if fit['diverged']
            else f'accuracy {fit["final_accuracy"]:.3f}, loss {fit["final_loss"]:.4g} after '
            f'{fit["steps_run"]} steps'
        )
        lines.append(
            f'[FAIL] overfit {fit["sample_size"]} fixed images: never reached '
            f'{fit["target_accuracy"]:.0%} ({why}, {how}'
            + (', labels shuffled' if fit['labels_shuffled'] else '')
            + ')'
        )
    lines.append(
        'SANITY '
        + (
            'PASSED'
            if report['passed']
            else 'FAILED: ' + ', '.join(k for k, v in c.items() if not v['passed'])
        )
    )
    return '\n'.join(lines)
