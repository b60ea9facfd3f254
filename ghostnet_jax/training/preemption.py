"""SIGTERM (a Cloud TPU preemption, `kill`) as a request every process agrees on.

Workers of a pod are signalled at different moments. If each acted on its own flag, one
would leave the loop to save while the others wait forever in the next all-reduce. So
the flag is only read through `agreed()`, which the loop calls at the same steps on
every process (its sync points) and which all-gathers the flags: every process sees the
same answer at the same step, stops there, and saves once, together.
"""

from __future__ import annotations

import logging
import signal

import jax
import numpy as np

log = logging.getLogger(__name__)


class Preemption:
    def __init__(self):
        self._requested = False
        self._previous = None

    def __enter__(self) -> 'Preemption':
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no signal handling, no preemption saves
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        if not self._requested:
            log.warning('SIGTERM received: stopping at the next sync point to save.')
        self._requested = True

    def request(self) -> None:
        """As if SIGTERM had arrived (tests, embedding code)."""
        self._requested = True

    def agreed(self) -> bool:
        """Whether any process was asked to stop. Collective in multi-process runs: every
        process must call it at the same point of the loop."""
        if jax.process_count() == 1:
            return self._requested
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(self._requested))
        return bool(np.max(flags))

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
