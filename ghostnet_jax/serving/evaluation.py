"""Evaluating a trained run on a split, exactly as its training evaluated it.

    result = evaluate_checkpoint('runs/cifar10', 'best', split='val')

The model, its weights (the EMA copies where the run kept them), class names, input
normalization and eval_flip come from the checkpoint itself (`ghostnet_jax.load`), the
data source and split names from the run's config.json; the optimizer is never rebuilt,
so every kind of run the trainer writes evaluates, time-budgeted ones included. The split
is counted example by example with the trainer's own evaluator, so evaluating the
weights results.json names on its validation split gives results.json's numbers.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import ml_collections
from etils import epath

from ghostnet_jax.data import DeviceEvalData, channel_stats, load_split, open_lazy_split
from ghostnet_jax.data.errors import DataError, SplitNotFoundError
from ghostnet_jax.data.stream import StreamEvalData
from ghostnet_jax.serving.loading import load
from ghostnet_jax.training.checkpoints import CheckpointError
from ghostnet_jax.training.evaluation import evaluator
from ghostnet_jax.training.experiment import compute_dtype, stream_options
from ghostnet_jax.training.model_spec import ModelSpec, spec_from_training
from ghostnet_jax.training.parallel import make_mesh, replicate

log = logging.getLogger(__name__)


def load_run_config(workdir: str | epath.Path) -> ml_collections.ConfigDict:
    """The config.json a training run wrote (CheckpointError when there is none)."""
    path = epath.Path(workdir) / 'config.json'
    if not path.exists():
        raise CheckpointError(
            f'{path} not found: --workdir must be a folder written by python -m ghostnet_jax.train.'
        )
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def _data_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return dict(
        data_dir=config.data.data_dir,
        cache_dir=config.data.cache_dir,
        image_size=config.data.image_size,
        skip_corrupt_images=config.data.get('skip_corrupt_images', False),
    )


def _rebuilt_spec(config: ml_collections.ConfigDict) -> ModelSpec:
    """The spec of a checkpoint written before checkpoints stored one, from the training
    split (which must then still be there, unchanged)."""
    log.warning(
        'This checkpoint predates stored model specs: recomputing the input '
        'normalization from the training split %s.',
        config.data.train_split,
    )
    train = load_split(config.data.source, config.data.train_split, **_data_kwargs(config))
    mean, std = channel_stats(train)
    return spec_from_training(config, train.class_names, train.image_shape, mean, std)


def evaluate_checkpoint(
    workdir: str | epath.Path,
    checkpoint: str | int = 'best',
    split: str = 'test',
    batch_size: int | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Metrics of one checkpoint of a run on `split` ('test', 'val', 'train' or a split
    spec) of the run's data source, or of `source` ('tfds:NAME' / 'folder:PATH')."""
    workdir = epath.Path(workdir)  # local folders and gs:// alike
    config = load_run_config(workdir)
    spec_text = (
        split
        if source
        else {
            'test': config.data.test_split,
            'val': config.data.val_split,
            'train': config.data.train_split,
        }.get(split, split)
    )
    if not spec_text:
        raise SplitNotFoundError(
            f'This run has no {split} split configured; pass a split spec, '
            "e.g. --split 'train[90%:]'."
        )
    run = load(workdir, checkpoint, fallback_spec=lambda: _rebuilt_spec(config))
    spec = run.spec
    kwargs = {**_data_kwargs(config), 'image_size': spec.resize}
    # A streamed run is evaluated streamed: its eval view (a centre crop after random-
    # resized training crops) and no split held whole, as during training.
    streamed = config.data.get('pipeline', 'device') != 'device' or bool(spec.eval_crop_pct)
    if streamed:
        options = stream_options(config.data)
        target = open_lazy_split(source or config.data.source, spec_text, streamed=True, **kwargs)
        shape = options.shape(target)
    else:
        target = load_split(source or config.data.source, spec_text, **kwargs)
        shape = target.image_shape
    if tuple(target.class_names) != spec.class_names:
        raise DataError(
            f'{target.name} has classes {list(target.class_names)}, but the model was trained on '
            f'{list(spec.class_names)}; evaluate on data with the same classes.'
        )
    if shape != spec.image_shape:
        raise DataError(
            f'{target.name} holds {shape} images, the model was trained on '
            f'{spec.image_shape}; the run resized images to {spec.resize}.'
        )
    # The module the trainer evaluated, in the run's compute dtype and conv formulation
    # (a GhostNetV3 in the folded form `load` gives: the same function to float rounding).
    dtype = compute_dtype(config.get('dtype', 'float32'))
    model = run.model.clone(dtype=dtype)
    mesh = make_mesh()
    if streamed:
        data = StreamEvalData(
            target,
            mesh,
            batch_size or config.eval_batch_size,
            spec.mean,
            spec.std,
            dtype=dtype,
            options=options,
        )
    else:
        data = DeviceEvalData(
            target, mesh, batch_size or config.eval_batch_size, spec.mean, spec.std, dtype=dtype
        )
    summary = evaluator(model, spec.num_classes, flip=spec.eval_flip)(
        replicate(run.variables, mesh), data
    )
    return {
        'workdir': str(workdir),
        'checkpoint': checkpoint,
        'step': run.step,
        'source': source or config.data.source,
        'split': spec_text,
        'eval_flip': spec.eval_flip,
        'num_examples': summary['num_examples'],
        'loss': summary['loss'],
        'accuracy': summary['accuracy'],
        'per_class_accuracy': dict(
            zip(spec.class_names, map(float, summary['per_class_accuracy']))
        ),
    }
