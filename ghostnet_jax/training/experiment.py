"""Everything a config describes, built once: data on devices, model, optimizer, state.

Shared by the trainer, the sweep and the benchmark so all read a config the same way. The
one thing built again later is the optimizer's schedule, for a length fitted after the
build (`with_schedule_length`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ghostnet_jax.data import (
    ArraySplit,
    AugmentConfig,
    DeviceEvalData,
    DeviceTrainData,
    LazySplit,
    channel_stats,
    load_split,
    open_lazy_split,
)
from ghostnet_jax.data import pipeline as pipeline_lib
from ghostnet_jax.data.stream import StreamEvalData, StreamOptions, StreamTrainData
from ghostnet_jax.models import create_model
from ghostnet_jax.training.config_checks import (
    check_batch_sizes,
    check_low_res_size,
    check_parallel,
)
from ghostnet_jax.training.optim import build_optimizer
from ghostnet_jax.training.parallel import PMAP_AXIS
from ghostnet_jax.training.pretrained import load_pretrained, merge_pretrained
from ghostnet_jax.training.state import TrainState, create_train_state, init_variables

log = logging.getLogger(__name__)


def compute_dtype(name: str) -> jnp.dtype:
    """'auto' is bfloat16 where matmuls are fast in it (TPU/GPU), float32 on CPU."""
    if name == 'auto':
        name = 'float32' if jax.default_backend() == 'cpu' else 'bfloat16'
    return jnp.dtype(name)


def load_splits(
    data_cfg: ml_collections.ConfigDict, sliced: bool | None = None, streamed: bool = False
) -> dict[str, ArraySplit | LazySplit | None]:
    """Decodes (or reads from cache) every split the config names, up front, so a missing
    test split fails now rather than after hours of training.

    `sliced` (default: when there are several processes) only opens the splits
    (`LazySplit`): each process then decodes just the rows its devices hold when the
    device data is built. `streamed`: only opens them, for the streamed pipeline (which
    never holds a split whole)."""
    kwargs = dict(
        data_dir=data_cfg.data_dir,
        cache_dir=data_cfg.cache_dir,
        image_size=data_cfg.image_size,
        skip_corrupt_images=data_cfg.get('skip_corrupt_images', False),
    )
    if sliced is None:
        sliced = jax.process_count() > 1
    load = load_split
    if streamed:
        load = functools.partial(open_lazy_split, streamed=True)
    elif sliced:
        load = open_lazy_split
    splits = {}
    for role in ('train', 'val', 'test'):
        name = data_cfg[f'{role}_split']
        splits[role] = load(data_cfg.source, name, **kwargs) if name else None
    if splits['val'] is None:
        raise ValueError(
            'data.val_split is empty: validation drives early stopping, the '
            "plateau schedule and the best checkpoint; give a split like 'train[90%:]'."
        )
    return splits


def build_model(config: ml_collections.ConfigDict, num_classes: int):
    return create_model(
        config.model.name,
        num_classes=num_classes,
        dropout_rate=config.model.dropout_rate,
        conv_impl=config.model.conv_impl,
        dtype=compute_dtype(config.dtype),
        bn_axis_name=PMAP_AXIS if config.parallel == 'pmap' else None,
    )


def stream_options(data_cfg: ml_collections.ConfigDict) -> StreamOptions:
    """config.data.stream (and data.image_size) as the streamed pipeline takes them."""
    stream = data_cfg.get('stream') or ml_collections.ConfigDict()
    fields = {f.name for f in dataclasses.fields(StreamOptions)}
    return StreamOptions(
        image_size=data_cfg.image_size, **{k: v for k, v in stream.to_dict().items() if k in fields}
    )


def choose_pipeline(
    data_cfg: ml_collections.ConfigDict, splits: dict | None = None
) -> tuple[str, dict[str, Any]]:
    """(pipeline, splits): data.pipeline resolved ('auto' by the splits' size, logged
    with the reason) and the splits opened or decoded as that pipeline reads them."""
    if splits is not None:  # in-memory arrays (the benchmark's): on the host already
        return 'device', splits
    wanted = data_cfg.get('pipeline', 'device')
    if wanted == 'device':
        return 'device', load_splits(data_cfg)
    lazy = load_splits(data_cfg, streamed=True)
    stream = data_cfg.get('stream') or ml_collections.ConfigDict()
    choice = pipeline_lib.choose(
        wanted,
        lazy,
        data_cfg.image_size,
        stream.get('device_memory_share', 0.25),
        bool(stream.get('random_resized_crop', False)),
    )
    log.info('Input pipeline: %s (%s).', choice.pipeline, choice.reason)
    if choice.pipeline == 'device' and jax.process_count() == 1:
        lazy = {
            role: split.read_all() if split is not None else None for role, split in lazy.items()
        }
    return choice.pipeline, lazy


def build_eval_data(
    split: ArraySplit | LazySplit, mesh, config, mean, std, pipeline: str = 'device'
) -> DeviceEvalData | StreamEvalData:
    if pipeline == 'stream':
        return StreamEvalData(
            split,
            mesh,
            config.eval_batch_size,
            mean,
            std,
            dtype=compute_dtype(config.dtype),
            options=stream_options(config.data),
        )
    return DeviceEvalData(
        split, mesh, config.eval_batch_size, mean, std, dtype=compute_dtype(config.dtype)
    )


@dataclasses.dataclass
class Experiment:
    config: ml_collections.ConfigDict
    mesh: Any
    model: Any
    tx: optax.GradientTransformation
    schedule: Callable
    state: TrainState  # initial state, replicated on the mesh
    train_data: DeviceTrainData | StreamTrainData
    val_data: DeviceEvalData | StreamEvalData
    test_data: DeviceEvalData | StreamEvalData | None
    class_names: tuple[str, ...]
    pipeline: str = 'device'  # the input pipeline data.pipeline resolved to


def build_experiment(
    config: ml_collections.ConfigDict, mesh, splits: dict[str, Any] | None = None
) -> Experiment:
    """Data on the devices, model, optimizer and initial state, as `config` describes
    them; `splits` ({'train', 'val', 'test'} arrays) replaces reading config.data. What
    the config asks of the machine (batches that split over the mesh, pmap on one process)
    and of the data (a low-res size below the images') is checked here, where both are
    known (the rest was checked before anything started: launch.check_config)."""
    check_batch_sizes(config, mesh.size)
    check_parallel(config, jax.process_count())
    pipeline, splits = choose_pipeline(config.data, splits)
    train = splits['train']
    mean, std = config.data.get('mean'), config.data.get('std')
    if not mean or not std:
        # A LazySplit is never whole on one process: the train data then sums the
        # statistics over every process's rows (mean=std=None).
        mean, std = channel_stats(train) if isinstance(train, ArraySplit) else (None, None)
    dtype = compute_dtype(config.dtype)
    augment = AugmentConfig(**config.data.augment.to_dict())
    if pipeline == 'stream':
        train_data = StreamTrainData(
            train,
            mesh,
            config.batch_size,
            config.seed,
            augment,
            mean,
            std,
            dtype=dtype,
            options=stream_options(config.data),
        )
    else:
        train_data = DeviceTrainData(
            train, mesh, config.batch_size, config.seed, augment, mean, std, dtype=dtype
        )
    check_low_res_size(config, train_data.image_shape)
    mean, std = train_data.mean, train_data.std
    val_data = build_eval_data(splits['val'], mesh, config, mean, std, pipeline)
    test_data = (
        build_eval_data(splits['test'], mesh, config, mean, std, pipeline)
        if splits.get('test')
        else None
    )

    model = build_model(config, train.num_classes)
    variables = init_variables(model, config.seed, train_data.image_shape)
    if config.init_from:
        variables = merge_pretrained(variables, load_pretrained(config.init_from))
    tx, schedule, state = _optimizer_and_state(
        config, variables, train_data.steps_per_epoch, config.num_epochs, mesh
    )
    return Experiment(
        config,
        mesh,
        model,
        tx,
        schedule,
        state,
        train_data,
        val_data,
        test_data,
        train.class_names,
        pipeline,
    )


def _optimizer_and_state(config, variables: dict, steps_per_epoch: int, num_epochs: int, mesh):
    from ghostnet_jax.training.parallel import replicate

    tx, schedule = build_optimizer(
        config.optimizer, steps_per_epoch, num_epochs, variables['params']
    )
    state = replicate(create_train_state(variables, tx, config.ema_decay), mesh)
    return tx, schedule, state


def with_schedule_length(experiment: Experiment, num_epochs: int) -> Experiment:
    """The experiment's optimizer with its schedule spanning `num_epochs` (a run learns its
    length after it is built: a time budget fits it): the optimizer state's structure does
    not depend on the length, so a trained state carries over unchanged."""
    tx, schedule = build_optimizer(
        experiment.config.optimizer,
        experiment.train_data.steps_per_epoch,
        num_epochs,
        experiment.state.params,
    )
    return dataclasses.replace(experiment, tx=tx, schedule=schedule)
