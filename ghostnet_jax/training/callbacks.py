"""Host-side EarlyStopping and ReduceLROnPlateau with Keras 3 semantics.

Both are plain Python: `update(epoch, metrics)` once per epoch after validation, and
`state_dict()` / `load_state_dict()` with JSON-able dicts, stored in the checkpoint's
host-state item so that a resumed run takes exactly the same decisions.

`epoch` is 0-based, like Keras' `on_epoch_end(epoch)`.

EarlyStopping (keras.callbacks.EarlyStopping):
  * improvement: max mode `current - min_delta > best`, min mode `current + min_delta < best`;
    the first monitored epoch always improves.
  * `wait` is incremented every epoch and reset to 0 on improvement; training stops at
    the first epoch (> 0) where `wait >= patience`, i.e. after `patience` consecutive
    epochs without improvement.
  * restore_best: as in Keras 3, the weights of `best_epoch` should be used at the end of
    training whether or not it stopped early. This class holds no weights; the decision
    reports `best_epoch`/`improved` so the loop can keep or restore them (e.g. from the
    checkpointer's best checkpoint).

ReduceLROnPlateau (keras.callbacks.ReduceLROnPlateau), acting on the plateau scale that
multiplies the schedule (see optim.set_lr_scale) instead of an absolute lr:
  * improvement: min mode `current < best - min_delta`, max mode `current > best + min_delta`;
    mode 'auto' means 'max' if 'acc' is in the monitor name, else 'min'.
  * each epoch: if in cooldown (counter > 0): counter -= 1 and wait = 0. Then on
    improvement best = current, wait = 0; otherwise, if not (still) in cooldown,
    wait += 1 and when wait >= patience the lr is reduced (if above the floor):
    scale *= factor, clamped to the floor, counter = cooldown, wait = 0.
    Keras quirk kept on purpose: because the counter is decremented before the check,
    the epoch on which it reaches 0 already counts towards patience, so cooldown=1
    behaves like cooldown=0 and cooldown=c ignores c-1 epochs.
  * floor: `min_scale` on the scale and/or `min_lr` on the effective lr
    (base_lr * scale, base_lr passed to update() as the schedule's current value).
    As in Keras, no reduction happens when the effective lr is already <= min_lr, and
    the wait counter is then not reset.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import ml_collections


def callbacks_from_config(
    cfg: ml_collections.ConfigDict,
) -> tuple['EarlyStopping | None', 'ReduceLROnPlateau | None']:
    """Builds the enabled callbacks from `config.callbacks` (None for disabled ones)."""
    es = cfg.early_stopping.to_dict()
    rp = cfg.reduce_lr_on_plateau.to_dict()
    es_on, rp_on = es.pop('enabled'), rp.pop('enabled')
    return (EarlyStopping(**es) if es_on else None, ReduceLROnPlateau(**rp) if rp_on else None)


def _monitor_value(name: str, monitor: str, metrics: Mapping[str, Any]) -> float:
    if monitor not in metrics:
        raise KeyError(
            f'{name} monitors {monitor!r}, which is not in the metrics passed to update(); '
            f'available keys: {sorted(metrics)}'
        )
    return float(metrics[monitor])


def _check_mode(mode: str, monitor: str) -> str:
    if mode == 'auto':
        return 'max' if 'acc' in monitor else 'min'
    if mode not in ('min', 'max'):
        raise ValueError(f"mode must be one of 'min', 'max', 'auto'; got {mode!r}")
    return mode


def _check_same(kind: str, state: Mapping[str, Any], **expected: Any) -> None:
    # best/wait are only meaningful for the metric and direction they were measured with.
    for key, value in expected.items():
        if key in state and state[key] != value:
            raise ValueError(
                f'{kind} state was saved with {key}={state[key]!r}, but this run uses {value!r}'
            )


@dataclasses.dataclass(frozen=True)
class EarlyStoppingDecision:
    stop: bool  # stop training after this epoch
    improved: bool  # this epoch is the new best
    best: float | None
    best_epoch: int | None
    wait: int


class EarlyStopping:
    def __init__(
        self,
        monitor: str = 'val_accuracy',
        mode: str = 'max',
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ):
        self.monitor = monitor
        self.mode = _check_mode(mode, monitor)
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.restore_best = bool(restore_best)
        self.wait = 0
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None

    def _is_improvement(self, current: float) -> bool:
        if self.best is None:
            return not math.isnan(current)
        if self.mode == 'max':
            return current - self.min_delta > self.best
        return current + self.min_delta < self.best

    def update(self, epoch: int, metrics: Mapping[str, Any]) -> EarlyStoppingDecision:
        current = _monitor_value('EarlyStopping', self.monitor, metrics)
        self.wait += 1
        improved = self._is_improvement(current)
        stop = False
        if improved:
            self.best, self.best_epoch, self.wait = current, epoch, 0
        elif self.wait >= self.patience and epoch > 0:
            self.stopped_epoch, stop = epoch, True
        return EarlyStoppingDecision(
            stop=stop,
            improved=improved,
            best=self.best,
            best_epoch=self.best_epoch,
            wait=self.wait,
        )

    def state_dict(self) -> dict[str, Any]:
        return dict(
            monitor=self.monitor,
            mode=self.mode,
            wait=self.wait,
            best=self.best,
            best_epoch=self.best_epoch,
            stopped_epoch=self.stopped_epoch,
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_same('EarlyStopping', state, monitor=self.monitor, mode=self.mode)
        self.wait = int(state['wait'])
        self.best = None if state['best'] is None else float(state['best'])
        self.best_epoch = state['best_epoch']
        self.stopped_epoch = state.get('stopped_epoch')


@dataclasses.dataclass(frozen=True)
class PlateauDecision:
    scale: float  # plateau scale to set into the optimizer state (optim.set_lr_scale)
    reduced: bool  # scale changed at this epoch
    improved: bool
    wait: int
    cooldown_counter: int


class ReduceLROnPlateau:
    def __init__(
        self,
        monitor: str = 'val_loss',
        mode: str = 'auto',
        factor: float = 0.5,
        patience: int = 3,
        cooldown: int = 0,
        min_scale: float = 0.0,
        min_lr: float = 0.0,
        min_delta: float = 1e-4,
    ):
        if not 0.0 < factor < 1.0:
            raise ValueError(f'ReduceLROnPlateau factor must be in (0, 1); got {factor}')
        self.monitor = monitor
        self.mode = _check_mode(mode, monitor)
        self.factor = float(factor)
        self.patience = int(patience)
        self.cooldown = int(cooldown)
        self.min_scale = float(min_scale)
        self.min_lr = float(min_lr)
        self.min_delta = abs(float(min_delta))
        self.scale = 1.0
        self.wait = 0
        self.cooldown_counter = 0
        self.best: float | None = None

    def _is_improvement(self, current: float) -> bool:
        if self.best is None:
            return not math.isnan(current)
        if self.mode == 'min':
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta

    def _floor(self, base_lr: float | None) -> float:
        """Lowest allowed scale given min_scale and min_lr (effective lr = base_lr * scale)."""
        floor = self.min_scale
        if self.min_lr > 0:
            if base_lr is None or base_lr <= 0:
                raise ValueError(
                    'ReduceLROnPlateau(min_lr > 0) needs update(..., base_lr=schedule(step)) > 0'
                )
            floor = max(floor, self.min_lr / base_lr)
        return floor

    def update(
        self, epoch: int, metrics: Mapping[str, Any], base_lr: float | None = None
    ) -> PlateauDecision:
        del epoch  # decisions depend only on the sequence of values, as in Keras
        current = _monitor_value('ReduceLROnPlateau', self.monitor, metrics)
        reduced = False
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        improved = self._is_improvement(current)
        if improved:
            self.best, self.wait = current, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                new = max(self.scale * self.factor, self._floor(base_lr))
                # Keras reduces only while lr > min_lr; comparing new < old also covers
                # float noise at the floor and a min_lr floor above the current lr.
                if new < self.scale:
                    self.scale = new
                    self.cooldown_counter, self.wait, reduced = self.cooldown, 0, True
        return PlateauDecision(self.scale, reduced, improved, self.wait, self.cooldown_counter)

    def state_dict(self) -> dict[str, Any]:
        return dict(
            monitor=self.monitor,
            mode=self.mode,
            scale=self.scale,
            wait=self.wait,
            cooldown_counter=self.cooldown_counter,
            best=self.best,
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_same('ReduceLROnPlateau', state, monitor=self.monitor, mode=self.mode)
        self.scale = float(state['scale'])
        self.wait = int(state['wait'])
        self.cooldown_counter = int(state['cooldown_counter'])
        self.best = None if state['best'] is None else float(state['best'])
