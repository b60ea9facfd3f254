"""A run's metrics.jsonl as series: per-step train records and per-epoch curves."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ghostnet_jax.training.checkpoints import CheckpointError


@dataclasses.dataclass
class RunHistory:
    train: dict[int, dict]  # step -> train record with 'loss' (the last written wins:
    val: dict[int, dict]  # epoch -> validation record    a resumed run may repeat steps)

    def steps(self) -> list[int]:
        return sorted(self.train)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a per-step train scalar, where it was logged."""
        pairs = [(s, self.train[s][key]) for s in self.steps() if key in self.train[s]]
        return [p[0] for p in pairs], [float(p[1]) for p in pairs]

    def train_epochs(self) -> tuple[list[int], dict[str, list[float]]]:
        """Per epoch, the mean of the step losses / accuracies logged in it."""
        by_epoch: dict[int, list[dict]] = {}
        for record in self.train.values():
            if 'epoch' in record:
                by_epoch.setdefault(record['epoch'], []).append(record)
        epochs = sorted(by_epoch)
        return epochs, {
            k: [float(np.mean([r[k] for r in by_epoch[e]])) for e in epochs]
            for k in ('loss', 'accuracy')
        }

    def val_epochs(self) -> tuple[list[int], dict[str, list[float]]]:
        epochs = sorted(self.val)
        return epochs, {k: [float(self.val[e][k]) for e in epochs] for k in ('loss', 'accuracy')}

    def epoch_learning_rates(self) -> dict[int, tuple[float, float]]:
        """Per epoch, the learning rate of its first and last logged step (with any
        plateau scale: the train step logs the rate it used)."""
        rates: dict[int, tuple[float, float]] = {}
        for step in self.steps():
            record = self.train[step]
            if 'epoch' in record and 'learning_rate' in record:
                lr = float(record['learning_rate'])
                first = rates.get(record['epoch'], (lr, lr))[0]
                rates[record['epoch']] = (first, lr)
        return rates

    def groups(self) -> list[str]:
        """The per-stage gradient-norm groups, e.g. ['head', 'stage0', ..., 'stem']."""
        keys = {k for r in self.train.values() for k in r if k.startswith('grad_norm/')}
        return sorted(k.split('/', 1)[1] for k in keys)


def load_history(workdir: str | Path) -> RunHistory:
    path = Path(workdir) / 'metrics.jsonl'
    if not path.exists():
        raise CheckpointError(f'{path} not found: --workdir must be a training run folder.')
    train, val = {}, {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get('split') == 'train' and 'loss' in record:
            train[record['step']] = record
        elif record.get('split') == 'val' and 'epoch' in record:
            val[record['epoch']] = record
    return RunHistory(train, val)
