"""Exact evaluation: metrics are summed as counts over masked batches, never averaged per batch.

Averaging per-batch means would over-weight the padded last batch; summing
(correct, loss_sum, count) and dividing once makes the result independent of the
batch size and the device count.

The one evaluator of the project is `ExactEvaluator`. Its per-step program has no
cross-device collective: counts accumulate per example slot, sharded like the batch,
and are summed once at the end. Dispatching hundreds of small steps that each
all-reduce made XLA's CPU runtime abort multi-device runs ("Termination timeout for
all reduce ... only 6 of 8 threads arrived": device threads queued behind later
programs never joined an earlier rendezvous); with nothing to rendezvous on, that
cannot happen. It also bounds how many steps are in flight (`max_in_flight`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Steps queued ahead of the host on an accelerator: enough to keep it busy, few enough
# that a runtime's queues never hold a whole evaluation.
MAX_IN_FLIGHT = 8


def steps_in_flight(backend: str | None = None) -> int:
    """How many steps the host may queue ahead of the devices: none on CPU, where XLA runs
    a program whose inputs are ready when it is dispatched on the calling thread, and
    queues one that must wait for them onto a worker thread, which was slower. Measured in
    one process (2-core AMD EPYC, GhostNet-CIFAR 0.5x train step, batch 128): 0.47 s with
    its batch and state ready at dispatch, 0.53-0.56 s when dispatched behind the batch or
    the step before it. On accelerators, MAX_IN_FLIGHT hides the host's dispatch time."""
    return 0 if (backend or jax.default_backend()) == 'cpu' else MAX_IN_FLIGHT


def example_counts(
    logits: jax.Array, labels: jax.Array, mask: jax.Array, num_classes: int
) -> dict[str, jax.Array]:
    """Per-example counts (leading batch axis kept, so no reduction across devices)."""
    mask = mask.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    loss = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32) * mask
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * mask[:, None]
    return {
        'correct': correct,
        'loss_sum': loss * mask,
        'count': mask,
        'per_class_correct': onehot * correct[:, None],
        'per_class_count': onehot,
    }


def eval_counts(
    logits: jax.Array, labels: jax.Array, mask: jax.Array, num_classes: int
) -> dict[str, jax.Array]:
    """Per-batch sums over unmasked examples; jit-able. Loss is softmax cross-entropy."""
    return jax.tree.map(
        lambda x: jnp.sum(x, axis=0), example_counts(logits, labels, mask, num_classes)
    )


def add_counts(a: dict, b: dict) -> dict:
    return jax.tree.map(jnp.add, a, b)


def summarize(counts: dict) -> dict:
    """Host-side final metrics from summed counts."""
    c = jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(counts))
    n = int(round(float(c['count'])))
    per_class_count = np.rint(c['per_class_count']).astype(np.int64)
    per_class_correct = np.rint(c['per_class_correct']).astype(np.int64)
    correct = int(round(float(c['correct'])))
    with np.errstate(invalid='ignore', divide='ignore'):
        per_class_acc = np.where(per_class_count > 0, per_class_correct / per_class_count, np.nan)
    return {
        'num_examples': n,
        'correct': correct,
        'accuracy': correct / n if n else float('nan'),
        'loss': float(c['loss_sum']) / n if n else float('nan'),
        'per_class_correct': per_class_correct,
        'per_class_count': per_class_count,
        'per_class_accuracy': per_class_acc,
    }


class ExactEvaluator:
    """Exact evaluation of `logits_fn(variables, images)` over masked batches, with one
    compiled step reused for every call (every epoch's validation, the final test).

    `stacked`: `variables` hold several models on a leading axis (a vectorized sweep);
    every model sees every batch and the call returns one summary per model."""

    def __init__(
        self,
        logits_fn: Callable[[Any, jax.Array], jax.Array],
        num_classes: int,
        max_in_flight: int = MAX_IN_FLIGHT,
        stacked: bool = False,
    ):
        self.num_classes, self.max_in_flight = num_classes, max(1, int(max_in_flight))
        self.stacked = stacked

        def counts(variables, batch):
            logits = logits_fn(variables, batch['image'])
            return example_counts(logits, batch['label'], batch['mask'], num_classes)

        if stacked:
            counts = jax.vmap(counts, in_axes=(0, None))
        example_axis = 1 if stacked else 0
        self._first = jax.jit(counts)
        # Not donated: `recent` keeps earlier totals to wait on (they are small).
        self._step = jax.jit(lambda v, b, t: add_counts(t, counts(v, b)))
        # The only cross-device reduction: once per evaluation, fully replicated result.
        self._total = jax.jit(lambda t: jax.tree.map(lambda x: jnp.sum(x, axis=example_axis), t))

    def __call__(self, variables: Any, batches: Iterable[dict]) -> dict | list[dict]:
        # Arrays just restored or placed may still be in transfer: settle them before
        # queueing work that reads them.
        jax.block_until_ready(variables)
        totals, recent = None, collections.deque()
        for batch in batches:
            totals = (
                self._first(variables, batch)
                if totals is None
                else self._step(variables, batch, totals)
            )
            recent.append(totals['count'])
            if len(recent) > self.max_in_flight:
                recent.popleft().block_until_ready()
        if totals is None:
            raise ValueError('Evaluation got no batches.')
        summed = jax.device_get(self._total(totals))
        if not self.stacked:
            return summarize(summed)
        models = len(summed['count'])
        return [summarize(jax.tree.map(lambda x: x[m], summed)) for m in range(models)]

    def step_hlo(self, variables: Any, batch: dict) -> str:
        """The compiled per-step program, for checking what it communicates."""
        return self._first.lower(variables, batch).compile().as_text()


def evaluate(
    batches: Iterable[dict], logits_fn: Callable[[jax.Array], jax.Array], num_classes: int
) -> dict:
    """Runs ``logits_fn`` on every batch (e.g. a DeviceEvalData) and returns ``summarize``d
    metrics; a one-off `ExactEvaluator` for callers without variables."""
    return ExactEvaluator(lambda _, images: logits_fn(images), num_classes)(None, batches)
