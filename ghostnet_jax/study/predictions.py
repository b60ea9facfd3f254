"""Per-example predictions of a run's best checkpoint on one of its splits, for the report's
confusion matrix and misclassified images (the trainer's evaluator only keeps counts)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import ml_collections
import numpy as np

from ghostnet_jax.data import load_split, open_lazy_split
from ghostnet_jax.training.checkpoints import CheckpointError


@dataclasses.dataclass
class Predictions:
    split: str  # 'test' or 'val'
    spec: str  # e.g. 'train[80%:]'
    step: int  # checkpoint step
    checkpoint: str  # 'best' or 'latest'
    images: np.ndarray  # (N, H, W, C) uint8, as stored
    labels: np.ndarray  # (N,)
    predicted: np.ndarray  # (N,)
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
        raise CheckpointError(f'{path} not found: --workdir must be a training run folder.')
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def predict(workdir: str | Path) -> Predictions:
    """Predictions of the weights results.json evaluated (the run's final-weights rule;
    'best' if the run has no results yet) on its test split, else its validation split,
    through `ghostnet_jax.load`: the checkpoint's own spec gives the model, the input
    normalization and the class names."""
    from ghostnet_jax.serving.loading import load

    workdir = Path(workdir)
    config = load_run_config(workdir)
    split, spec = (
        ('test', config.data.test_split)
        if config.data.test_split
        else ('val', config.data.val_split)
    )
    results_path = workdir / 'results.json'
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    which = results.get('step', 'best')
    trained = load(workdir, which)
    kwargs = dict(
        data_dir=config.data.data_dir,
        cache_dir=config.data.cache_dir,
        image_size=trained.spec.resize,
        skip_corrupt_images=config.data.get('skip_corrupt_images', False),
    )
    if trained.spec.eval_crop_pct:  # evaluated on centre crops: the report shows those
        from ghostnet_jax.data.stream import read_eval_split
        from ghostnet_jax.training.experiment import stream_options

        target = read_eval_split(
            open_lazy_split(config.data.source, spec, streamed=True, **kwargs),
            stream_options(config.data),
        )
    else:
        target = load_split(config.data.source, spec, **kwargs)
    predicted = np.argmax(trained.predict(target.images), axis=-1)
    return Predictions(
        split,
        spec,
        int(trained.step),
        results.get('checkpoint', 'best'),
        target.images,
        target.labels,
        predicted,
        trained.class_names,
    )
