"""The host side of a run, persisted with every checkpoint (its `host` JSON item).

The device state (`TrainState`) says where the weights are; `LoopState` says where the
loop is: epochs validated, per-epoch history, the running sums of a partly trained
epoch, the callbacks' state, the best epoch so far, why the run stopped, and what the
run is (its identity and model spec) so that a resume can refuse to continue another
experiment. A resumed run restores both and continues exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ghostnet_jax.training.model_spec import SPEC_KEY

# Stop kinds. 'preempted' is the only one a rerun continues from without being asked.
COMPLETED, MAX_STEPS, EARLY_STOPPING, PREEMPTED = (
    'completed',
    'max_steps',
    'early_stopping',
    'preempted',
)
FINISHED_KINDS = (COMPLETED, MAX_STEPS, EARLY_STOPPING)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stopped, keeping the last good checkpoint."""


@dataclasses.dataclass
class EpochSums:
    """Running train-metric sums of the epoch in progress (so a resumed epoch's train loss
    still covers the whole epoch)."""

    epoch: int = 0  # 0-based epoch these sums belong to
    loss: float = 0.0
    accuracy: float = 0.0
    steps: int = 0

    def add(self, loss: float, accuracy: float) -> None:
        self.loss += loss
        self.accuracy += accuracy
        self.steps += 1

    def means(self) -> tuple[float, float]:
        if not self.steps:
            return float('nan'), float('nan')
        return self.loss / self.steps, self.accuracy / self.steps


@dataclasses.dataclass
class BestSoFar:
    """The epoch whose weights the end of training evaluates (training/evaluation.py)."""

    metric: str
    mode: str  # 'max' or 'min'
    min_delta: float = 0.0  # early stopping's, when its restore_best chooses
    value: float | None = None
    epoch: int | None = None  # 1-based
    step: int | None = None

    def update(self, record: Mapping[str, Any]) -> bool:
        value = record.get(self.metric)
        if value is None or value != value:  # missing or NaN never improves
            return False
        # Early stopping's rule (keras): the first value always improves.
        better = self.value is None or (
            value - self.min_delta > self.value
            if self.mode == 'max'
            else value + self.min_delta < self.value
        )
        if better:
            self.value, self.epoch, self.step = (
                float(value),
                int(record['epoch']),
                int(record['step']),
            )
        return better


@dataclasses.dataclass
class LoopState:
    evaluated_epochs: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)
    epoch_sums: EpochSums = dataclasses.field(default_factory=EpochSums)
    early_stopping: dict | None = None
    plateau: dict | None = None
    best: BestSoFar | None = None
    stop_kind: str | None = None  # one of the kinds above once the loop has stopped
    stop_reason: str | None = None  # the same, in words
    identity: dict = dataclasses.field(default_factory=dict)
    num_epochs: int | None = None  # the run's length when this state was saved
    max_steps: int | None = None
    model_spec: dict | None = None
    time_budget: dict | None = None  # a time budget's plan: the length the run keeps
    # What the run computed with, from which step: one entry per change of backend, device
    # count or XLA:CPU thread count (environment.compute_setup; resume_checks says why).
    compute: list[dict] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d[SPEC_KEY] = d.pop('model_spec')
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> 'LoopState':
        """Also reads host states written before LoopState existed (fewer keys)."""
        d = dict(d)
        sums = d.get('epoch_sums') or {}
        best = d.get('best')
        return cls(
            evaluated_epochs=int(d.get('evaluated_epochs', 0)),
            history=list(d.get('history') or []),
            epoch_sums=EpochSums(**sums),
            early_stopping=d.get('early_stopping'),
            plateau=d.get('plateau'),
            best=BestSoFar(**best) if best else None,
            stop_kind=d.get('stop_kind'),
            stop_reason=d.get('stop_reason'),
            identity=dict(d.get('identity') or {}),
            num_epochs=d.get('num_epochs'),
            max_steps=d.get('max_steps'),
            model_spec=d.get(SPEC_KEY),
            time_budget=d.get('time_budget'),
            compute=list(d.get('compute') or []),
        )
