"""The one loop over an epoch's steps: what the trainer runs, what the benchmark times as
"a real epoch" and what a vectorized sweep runs for all its models at once.

Every step is dispatched with its batch; the host waits for the device only at *sync
points* (every `sync_every` steps of the run and at the epoch's last step), where the
window's metrics are fetched in one transfer and handed to `on_sync`, which may ask the
loop to stop there. At most `max_in_flight` steps are queued ahead of the host: none on
CPU, where each batch is also waited for before its step is dispatched
(`data.metrics.steps_in_flight` says why), a few on accelerators.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Callable, Protocol

import jax


class StepRunner(Protocol):
    """A compiled train step over a carried state (`parallel.DataParallelStep`, or a
    vmapped step of several models)."""

    def step(self, carried: Any, batch: dict) -> tuple[Any, dict]: ...


@dataclasses.dataclass
class EpochRun:
    carried: Any  # the runner's state after the last step run
    stop: str | None  # what on_sync answered when it stopped the loop early
    steps_done: int  # steps of the epoch done (first..stop), within the epoch
    clock: list[tuple[int, float]]  # (steps done within the epoch, time) at start and syncs

    def seconds_per_step(self) -> float:
        """Seconds per step between sync points, leaving out the first window (its first
        step may compile, and the epoch's reshuffle runs in it) when there is more than one."""
        (k0, t0), (k1, t1) = (
            (self.clock[1] if len(self.clock) > 2 else self.clock[0]),
            self.clock[-1],
        )
        return (t1 - t0) / max(k1 - k0, 1)


def run_epoch(
    runner: StepRunner,
    carried: Any,
    batch_at: Callable[[int], dict],
    first: int,
    stop: int,
    *,
    sync_every: int,
    steps_before: int,
    max_in_flight: int,
    on_sync: Callable[[int, list[dict], bool], str | None],
    on_step: Callable[[int], None] | None = None,
) -> EpochRun:
    """Runs steps `first`..`stop - 1` of an epoch. `batch_at(k)` gives step k's batch;
    `steps_before` is the run's step count at the epoch's step 0 (sync points are every
    `sync_every` steps of the whole run, so a resumed epoch syncs where the original did).
    `on_sync(steps_done, metrics, last)` gets the window's fetched metrics at each sync
    point (`last`: the epoch's last step) and returns a reason to stop there or None (not
    consulted at the last step: the epoch ends there anyway);
    `on_step(steps_done)` runs on the host after each dispatch (a progress line)."""
    clock = [(first, time.time())]
    pending: list[dict] = []
    queued: collections.deque = collections.deque()
    for k in range(first, stop):
        batch = batch_at(k)
        if not max_in_flight:
            batch = jax.block_until_ready(batch)
        carried, metrics = runner.step(carried, batch)
        pending.append(metrics)
        queued.append(metrics['loss'])
        while len(queued) > max_in_flight:
            queued.popleft().block_until_ready()
        last = k == stop - 1
        if (steps_before + k + 1) % sync_every == 0 or last:
            fetched, pending = jax.device_get(pending), []
            reason = on_sync(k + 1, fetched, last)
            clock.append((k + 1, time.time()))
            if reason and not last:
                if on_step:
                    on_step(k + 1)
                return EpochRun(carried, reason, k + 1, clock)
        if on_step:
            on_step(k + 1)
    return EpochRun(carried, None, stop, clock)
