"""Pure train and eval steps. The same functions run under jit (sharded batch, replicated
state: reductions are global automatically) and under pmap/shard_map (explicit `pmean`
over `axis_name`, and BatchNorm given the same axis name)."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from ghostnet_jax.training.optim import current_learning_rate, ema_decay_at, update_ema
from ghostnet_jax.training.state import TrainState


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    """Per-example softmax cross-entropy in float32, with optional label smoothing.

    ``labels`` are int class ids (B,) or, from mixup/cutmix, soft targets (B, classes)."""
    num_classes = logits.shape[-1]
    targets = labels if labels.ndim == logits.ndim else jax.nn.one_hot(labels, num_classes)
    targets = optax.smooth_labels(targets.astype(jnp.float32), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def hard_labels(labels: jax.Array) -> jax.Array:
    """Class ids for accuracy: int labels as they are, soft targets by their argmax."""
    return labels if labels.ndim == 1 else jnp.argmax(labels, -1)


def _group_norms(tree: Any, model: nn.Module) -> dict[str, jax.Array]:
    """Gradient norm per parameter group, as the model names its groups (its stages)."""
    name_group = getattr(model, 'parameter_group', lambda name: name)
    squares: dict[str, jax.Array] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        group = name_group(str(getattr(path[0], 'key', path[0])))
        squares[group] = squares.get(group, 0.0) + jnp.sum(jnp.square(leaf.astype(jnp.float32)))
    return {f'grad_norm/{k}': jnp.sqrt(v) for k, v in sorted(squares.items())}


def _mean(x, axis_name: str | None):
    return x if axis_name is None else lax.pmean(x, axis_name)


def train_step(
    state: TrainState,
    batch: dict,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: Callable,
    seed: int,
    label_smoothing: float = 0.0,
    ema_decay: float = 0.0,
    axis_name: str | None = None,
) -> tuple[TrainState, dict]:
    """One optimizer step. Randomness (dropout) is a pure function of (seed, step).

    If the loss is not finite the update is skipped and `nonfinite_step` records the step,
    so the state the host eventually saves is the last good one.
    """
    dropout_rng = jax.random.fold_in(jax.random.key(seed), state.step)
    if axis_name is not None:
        dropout_rng = jax.random.fold_in(dropout_rng, lax.axis_index(axis_name))

    def loss_fn(params):
        logits, updates = model.apply(
            {'params': params, 'batch_stats': state.batch_stats},
            batch['image'],
            train=True,
            mutable=['batch_stats'],
            rngs={'dropout': dropout_rng},
        )
        loss = jnp.mean(cross_entropy(logits, batch['label'], label_smoothing))
        return loss, (logits, updates['batch_stats'])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = _mean(grads, axis_name)
    loss = _mean(loss, axis_name)
    accuracy = _mean(jnp.mean(jnp.argmax(logits, -1) == hard_labels(batch['label'])), axis_name)

    lr = current_learning_rate(schedule, state.opt_state, state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss)
    decay = ema_decay_at(ema_decay, state.step) if ema_decay else 0.0
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        batch_stats=keep(batch_stats, state.batch_stats),
        opt_state=keep(opt_state, state.opt_state),
        ema_params=keep(update_ema(state.ema_params, params, decay), state.ema_params),
        ema_batch_stats=keep(
            update_ema(state.ema_batch_stats, batch_stats, decay), state.ema_batch_stats
        ),
        nonfinite_step=jnp.where(
            (state.nonfinite_step < 0) & ~finite, state.step, state.nonfinite_step
        ),
    )
    norm = optax.tree_utils.tree_norm
    metrics = {
        'loss': loss,
        'accuracy': accuracy,
        'learning_rate': lr,
        'grad_norm': norm(grads),
        'update_param_ratio': norm(updates) / jnp.maximum(norm(state.params), 1e-12),
        **_group_norms(grads, model),
    }
    return new_state, metrics


def eval_logits(
    variables: dict, images: jax.Array, *, model: nn.Module, flip: bool = False
) -> jax.Array:
    """Eval-mode logits (running BN statistics, no dropout).

    ``flip`` (config.eval_flip) averages the softmax probabilities of each image and its
    horizontal mirror and returns their log, float32: argmax is the averaged prediction
    and softmax cross-entropy of it is the NLL of the averaged distribution."""
    logits = model.apply(variables, images, train=False)
    if not flip:
        return logits
    # jnp.flip is one reverse op in every export format (a strided slice can become a
    # gather that TFLite cannot convert).
    mirrored = model.apply(variables, jnp.flip(images, axis=2), train=False)
    log_probs = jnp.stack([jax.nn.log_softmax(x.astype(jnp.float32)) for x in (logits, mirrored)])
    return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(2.0)
