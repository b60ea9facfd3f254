"""Per-example predictions of a run's best checkpoint on one of its splits, for the report's
confusion matrix and misclassified images (the trainer's evaluator only keeps counts)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ghostnet_jax.data import channel_stats, load_split, normalize
from ghostnet_jax.models import create_model
from ghostnet_jax.training import steps
from ghostnet_jax.training.checkpoints import Checkpointer
from ghostnet_jax.training.experiment import compute_dtype


@dataclasses.dataclass
class Predictions:
    split: str                  # 'test' or 'val'
    spec: str                   # e.g. 'train[80%:]'
    step: int                   # checkpoint step
    checkpoint: str             # 'best' or 'latest'
    images: np.ndarray          # (N, H, W, C) uint8, as stored
    labels: np.ndarray          # (N,)
    predicted: np.ndarray       # (N,)
    class_names: tuple[str, ...]

    def confusion(self) -> np.ndarray:
        """counts[true, predicted]."""
        n = len(self.class_names)
        matrix = np.zeros((n, n), np.int64)
        np.add.at(matrix, (self.labels, self.predicted), 1)
        return matrix


def load_run_config(workdir: Path) -> ml_collections.ConfigDict:
    path = Path(workdir) / 'config.json'
    if not path.exists():
        raise FileNotFoundError(f'{path} not found: --workdir must be a training run folder.')
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def restore_variables(workdir: Path, config: ml_collections.ConfigDict) -> tuple[dict, int, str]:
    """{'params', 'batch_stats'} of the best checkpoint (latest if none has a metric), read
    from the checkpoint's own metadata so that any optimizer state layout restores; EMA
    params are used when the run kept them, as the trainer evaluates."""
    with Checkpointer.from_config(workdir, config.checkpoint, read_only=True) as ckpt:
        step, which = ckpt.best_step(), 'best'
        if step is None:
            step, which = ckpt.latest_step(), 'latest'
        directory = ckpt.directory
    item = Path(directory) / str(step) / 'state'
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(item).item_metadata.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = checkpointer.restore(item, args=ocp.args.PyTreeRestore(restore_args=args))
    params = state.get('ema_params') or state['params']
    return {'params': params, 'batch_stats': state.get('batch_stats', {})}, int(step), which


def predict(workdir: str | Path) -> Predictions:
    workdir = Path(workdir)
    config = load_run_config(workdir)
    split, spec = ('test', config.data.test_split) if config.data.test_split else (
        'val', config.data.val_split)
    kwargs = dict(data_dir=config.data.data_dir, cache_dir=config.data.cache_dir,
                  image_size=config.data.image_size)
    train = load_split(config.data.source, config.data.train_split, **kwargs)
    target = load_split(config.data.source, spec, **kwargs)
    mean, std = channel_stats(train)    # the normalization the model was trained with
    dtype = compute_dtype(config.dtype)
    model = create_model(config.model.name, num_classes=train.num_classes,
                         dropout_rate=config.model.dropout_rate, conv_impl=config.model.conv_impl,
                         dtype=dtype)
    variables, step, which = restore_variables(workdir, config)

    @jax.jit
    def classify(variables, images):
        x = normalize(images, mean, std, dtype)
        return jnp.argmax(steps.eval_logits(variables, x, model=model), -1)

    b = config.eval_batch_size
    predicted = []
    for start in range(0, len(target), b):
        chunk = target.images[start:start + b]
        padded = np.concatenate([chunk, np.zeros((b - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        predicted.append(np.asarray(classify(variables, padded))[:len(chunk)])
    return Predictions(split, spec, step, which, target.images, target.labels,
                       np.concatenate(predicted), tuple(train.class_names))
