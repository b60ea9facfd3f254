"""Exact evaluation: metrics are summed as counts over masked batches, never averaged per batch.

Averaging per-batch means would over-weight the padded last batch; summing
(correct, loss_sum, count) and dividing once makes the result independent of the
batch size and the device count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np


def eval_counts(
    logits: jax.Array, labels: jax.Array, mask: jax.Array, num_classes: int
) -> dict[str, jax.Array]:
    """Per-batch sums over unmasked examples; jit-able. Loss is softmax cross-entropy."""
    mask = mask.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    loss = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32) * mask
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * mask[:, None]
    return {
        'correct': jnp.sum(correct).astype(jnp.int32),
        'loss_sum': jnp.sum(loss * mask),
        'count': jnp.sum(mask).astype(jnp.int32),
        'per_class_correct': jnp.sum(onehot * correct[:, None], axis=0).astype(jnp.int32),
        'per_class_count': jnp.sum(onehot, axis=0).astype(jnp.int32),
    }


def add_counts(a: dict, b: dict) -> dict:
    return jax.tree.map(jnp.add, a, b)


def summarize(counts: dict) -> dict:
    """Host-side final metrics from summed counts."""
    c = jax.tree.map(np.asarray, jax.device_get(counts))
    n = int(c['count'])
    per_class_count = c['per_class_count'].astype(np.int64)
    with np.errstate(invalid='ignore', divide='ignore'):
        per_class_acc = np.where(
            per_class_count > 0, c['per_class_correct'] / per_class_count, np.nan
        )
    return {
        'num_examples': n,
        'correct': int(c['correct']),
        'accuracy': float(c['correct']) / n if n else float('nan'),
        'loss': float(c['loss_sum']) / n if n else float('nan'),
        'per_class_correct': c['per_class_correct'].astype(np.int64),
        'per_class_count': per_class_count,
        'per_class_accuracy': per_class_acc,
    }


def evaluate(
    batches: Iterable[dict], logits_fn: Callable[[jax.Array], jax.Array], num_classes: int
) -> dict:
    """Runs ``logits_fn`` on every batch (e.g. a DeviceEvalData) and returns ``summarize``d metrics.

    Counts stay on device until the end: one host transfer per evaluation.
    """

    @jax.jit
    def step(total, batch):
        return add_counts(
            total,
            eval_counts(logits_fn(batch['image']), batch['label'], batch['mask'], num_classes),
        )

    total = None
    for batch in batches:
        if total is None:
            total = jax.tree.map(
                jnp.zeros_like,
                eval_counts(
                    jnp.zeros((1, num_classes)),
                    jnp.zeros((1,), jnp.int32),
                    jnp.zeros((1,)),
                    num_classes,
                ),
            )
        total = step(total, batch)
    if total is None:
        raise ValueError('evaluate() got no batches.')
    return summarize(total)
