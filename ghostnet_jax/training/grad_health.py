"""Gradient-health warnings during training: a stage whose gradient norm vanishes or
explodes relative to its own recent history, named, once per episode.

Pure host-side state; feed it the train metrics the trainer already logs
(`grad_norm/<group>` scalars) step by step.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping


class GradientHealth:
    """`update(step, metrics)` returns warnings (possibly none) for this step.

    A group's reference is the median of its last `window` healthy values; once at least
    `min_history` are known, a value above `explode_factor` x reference (or not finite)
    is exploding and one below reference / `vanish_factor` is vanishing. A group warns when
    it enters such a state and again only after it has been healthy; unhealthy values do
    not enter the history, so the reference stays what the stage normally sees.
    """

    def __init__(
        self,
        window: int = 100,
        min_history: int = 10,
        explode_factor: float = 10.0,
        vanish_factor: float = 100.0,
        prefix: str = 'grad_norm/',
    ):
        self.window, self.min_history = window, min_history
        self.explode_factor, self.vanish_factor, self.prefix = explode_factor, vanish_factor, prefix
        self._history: dict[str, collections.deque] = {}
        self._state: dict[str, str] = {}

    def update(self, step: int, metrics: Mapping[str, float]) -> list[str]:
        warnings = []
        for key, value in metrics.items():
            if not key.startswith(self.prefix):
                continue
            group, value = key[len(self.prefix) :], float(value)
            history = self._history.setdefault(group, collections.deque(maxlen=self.window))
            state, reference = 'ok', None
            if len(history) >= self.min_history:
                reference = sorted(history)[len(history) // 2]
                if not math.isfinite(value) or value > self.explode_factor * reference:
                    state = 'exploding'
                elif value < reference / self.vanish_factor:
                    state = 'vanishing'
            elif not math.isfinite(value):
                state = 'exploding'
            if state != 'ok' and self._state.get(group, 'ok') != state:
                ref = f'{reference:.3g}' if reference is not None else 'n/a'
                warnings.append(
                    f'step {step}: gradient norm of {group} is {state}: {value:.3g} vs its '
                    f'recent median {ref} (factor '
                    f'{self.explode_factor if state == "exploding" else 1 / self.vanish_factor:g})'
                )
            self._state[group] = state
            if state == 'ok':
                history.append(value)
        return warnings
