"""Early, clear errors for bad configs: unknown fields and bad values name the valid ones."""

from __future__ import annotations

import ml_collections

from ghostnet_jax.data.pipeline import PIPELINES
from ghostnet_jax.models import list_models
from ghostnet_jax.training.optim import OPTIMIZERS, SCHEDULES
from ghostnet_jax.training.parallel import PARALLEL_MODES

DTYPES = ('auto', 'float32', 'bfloat16')
MONITORS = ('val_accuracy', 'val_loss', 'train_accuracy', 'train_loss')


class ConfigError(ValueError):
    """A config field is unknown or has a bad value."""


def _unknown_fields(config, reference, prefix=''):
    for key in config.keys():
        path = f'{prefix}{key}'
        if key not in reference:
            raise ConfigError(
                f'Unknown config field {path!r}. Valid fields here: '
                f'{", ".join(sorted(reference.keys()))}.'
            )
        if isinstance(config[key], ml_collections.ConfigDict) and isinstance(
            reference[key], ml_collections.ConfigDict
        ):
            _unknown_fields(config[key], reference[key], path + '.')


def _choice(value, choices, name):
    if value not in choices:
        raise ConfigError(
            f'{name}={value!r} is not valid; choose one of: {", ".join(map(str, choices))}.'
        )


def _positive(value, name, allow_zero=False):
    if value is None or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(
            f'{name} must be {"non-negative" if allow_zero else "positive"}, got {value!r}.'
        )


def validate_config(
    config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict
) -> None:
    """Raises ConfigError naming the field and its valid choices. `reference` is the
    default config: every field of `config` must exist there."""
    _unknown_fields(config, reference)
    if config.model.name or not config.get('init_from'):  # '': init_from's architecture
        _choice(config.model.name, list_models(), 'model.name')
    _choice(config.optimizer.name, OPTIMIZERS, 'optimizer.name')
    _choice(config.optimizer.schedule, SCHEDULES, 'optimizer.schedule')
    _choice(config.parallel, PARALLEL_MODES, 'parallel')
    _choice(config.dtype, DTYPES, 'dtype')
    _choice(config.model.conv_impl, ('auto', 'native', 'shifted'), 'model.conv_impl')
    _choice(config.data.augment.padding_mode, ('reflect', 'zero'), 'data.augment.padding_mode')
    _choice(config.checkpoint.best_mode, ('max', 'min'), 'checkpoint.best_mode')
    for name in ('early_stopping', 'reduce_lr_on_plateau'):
        _choice(config.callbacks[name].monitor, MONITORS, f'callbacks.{name}.monitor')
    if not config.data.source.startswith(('tfds:', 'folder:')):
        raise ConfigError(f'data.source={config.data.source!r} must be tfds:NAME or folder:PATH.')
    _positive(config.batch_size, 'batch_size')
    _positive(config.eval_batch_size, 'eval_batch_size')
    _positive(config.num_epochs, 'num_epochs')
    _positive(config.optimizer.learning_rate, 'optimizer.learning_rate')
    _positive(config.log_every_steps, 'log_every_steps')
    _positive(config.label_smoothing, 'label_smoothing', allow_zero=True)
    _positive(config.checkpoint.every_epochs, 'checkpoint.every_epochs')
    _positive(
        config.checkpoint.get('save_timeout_s', 0), 'checkpoint.save_timeout_s', allow_zero=True
    )
    if not 0.0 <= config.model.dropout_rate < 1.0:
        raise ConfigError(f'model.dropout_rate must be in [0, 1), got {config.model.dropout_rate}.')
    if not 0.0 <= config.ema_decay < 1.0:
        raise ConfigError(f'ema_decay must be in [0, 1), got {config.ema_decay}.')
    if config.max_steps is not None:
        _positive(config.max_steps, 'max_steps')
    if config.get('time_budget_minutes') is not None:
        _positive(config.time_budget_minutes, 'time_budget_minutes', allow_zero=True)
    _check_augment(config.data.augment)
    if config.data.get('low_res'):
        _check_low_res(config.data.low_res, config.data.get('image_size'))
    if not isinstance(config.eval_flip, bool):
        raise ConfigError(f'eval_flip must be True or False, got {config.eval_flip!r}.')
    _check_pipeline(config)


def _check_pipeline(config: ml_collections.ConfigDict) -> None:
    """data.pipeline, data.stream, data.mean/std and checkpoint.every_steps."""
    data = config.data
    _choice(data.get('pipeline', 'device'), PIPELINES, 'data.pipeline')
    stream = data.get('stream')
    if stream is not None:
        for name in ('workers', 'threads'):
            _positive(stream[name], f'data.stream.{name}', allow_zero=True)
        _positive(stream.prefetch, 'data.stream.prefetch')
        _positive(stream.stats_examples, 'data.stream.stats_examples')
        if not 0.0 < stream.device_memory_share <= 1.0:
            raise ConfigError(
                f"data.stream.device_memory_share is the share of one device's "
                f"memory the splits may take for data.pipeline='auto' to keep "
                f'them there: choose a value in (0, 1], got '
                f'{stream.device_memory_share!r}.'
            )
        if not 0.0 < stream.eval_crop_pct <= 1.0:
            raise ConfigError(
                f'data.stream.eval_crop_pct must be in (0, 1], e.g. 0.875; got '
                f'{stream.eval_crop_pct!r}.'
            )
        if stream.random_resized_crop:
            if data.get('pipeline', 'device') == 'device':
                raise ConfigError(
                    'data.stream.random_resized_crop crops each image at its own '
                    'size, which only the streamed pipeline reads: set '
                    "data.pipeline='stream' (or 'auto')."
                )
            if not data.image_size:
                raise ConfigError(
                    'data.stream.random_resized_crop needs data.image_size, the '
                    'side of the crops (e.g. 224).'
                )
    mean, std = tuple(data.get('mean') or ()), tuple(data.get('std') or ())
    numbers = all(isinstance(v, (int, float)) for v in mean + std)
    if len(mean) != len(std) or not numbers or (std and min(std) <= 0):
        raise ConfigError(
            f'data.mean and data.std are set together, one value per channel in '
            f"pixel units (0..255), std positive, e.g. ImageNet's "
            f'(123.675, 116.28, 103.53) and (58.395, 57.12, 57.375), or both '
            f"'()' for the training split's own statistics; got {mean!r} and "
            f'{std!r}.'
        )
    every = config.checkpoint.get('every_steps', 0) or 0
    _positive(every, 'checkpoint.every_steps', allow_zero=True)
    if every and every % config.log_every_steps:
        raise ConfigError(
            f'checkpoint.every_steps={every} must be a multiple of '
            f'log_every_steps={config.log_every_steps} (checkpoints are taken '
            'where the host syncs), e.g. '
            f'{config.log_every_steps * max(1, every // config.log_every_steps)}.'
        )


def _check_augment(a: ml_collections.ConfigDict) -> None:
    for name in ('flip', 'trivial_augment'):
        if not isinstance(a[name], bool):
            raise ConfigError(f'data.augment.{name} must be True or False, got {a[name]!r}.')
    for name in ('crop_padding', 'cutout'):
        _positive(a[name], f'data.augment.{name}', allow_zero=True)
    for name in ('random_erasing', 'mix_prob'):
        if not 0.0 <= a[name] <= 1.0:
            raise ConfigError(
                f'data.augment.{name} is a probability: choose a value in [0, 1], got {a[name]!r}.'
            )
    for name in ('mixup_alpha', 'cutmix_alpha'):
        if a[name] < 0:
            raise ConfigError(
                f'data.augment.{name} must be 0 (off) or a positive Beta '
                f'parameter (1.0 is common for mixup and cutmix), got {a[name]!r}.'
            )


def _check_low_res(low_res: ml_collections.ConfigDict, image_size: int | None) -> None:
    size, fraction = low_res.size, low_res.epochs_fraction
    if not isinstance(size, int) or size < 0 or size == 1:
        raise ConfigError(
            f'data.low_res.size is the side of the small training images: 0 '
            f'(off) or at least 2, e.g. 24 for 32x32 CIFAR; got {size!r}.'
        )
    if size and image_size and size >= image_size:
        raise ConfigError(
            f'data.low_res.size={size} must be smaller than data.image_size='
            f'{image_size}, or 0 (off).'
        )
    if size and not 0.0 < fraction <= 1.0:
        raise ConfigError(
            f'data.low_res.epochs_fraction is the share of epochs trained at '
            f'the low size: choose a value in (0, 1], got {fraction!r}.'
        )


def check_low_res_size(config: ml_collections.ConfigDict, image_shape: tuple) -> None:
    """data.low_res.size must be below the training images' side (known once loaded)."""
    size, side = (config.data.get('low_res') or {}).get('size', 0), min(image_shape[:2])
    if size and size >= side:
        raise ConfigError(
            f'data.low_res.size={size} must be smaller than the training '
            f'images ({side}x{side}), or 0 (off).'
        )


def check_batch_sizes(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """The global batch sizes must split evenly over the devices of the data mesh."""
    for name in ('batch_size', 'eval_batch_size'):
        value = config[name]
        if value % num_devices:
            lo = max(num_devices, value // num_devices * num_devices)
            raise ConfigError(
                f'{name}={value} does not divide over the {num_devices} devices; '
                f'use a multiple of {num_devices} (e.g. {lo} or {lo + num_devices}).'
            )


def check_parallel(config: ml_collections.ConfigDict, process_count: int) -> None:
    """pmap maps over the local devices of one process; its multi-process form needs
    per-process batch slicing that the trainer does not do, so refuse it before compiling."""
    if config.parallel == 'pmap' and process_count > 1:
        raise ConfigError(
            f"parallel='pmap' runs on one process only, but this run has "
            f"{process_count} processes; use parallel='jit' (the same data "
            "parallelism, sharded over every process's devices)."
        )
