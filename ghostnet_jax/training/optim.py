"""Optimizer, learning-rate schedules, plateau scaling and parameter EMA.

Config (`config.optimizer`; every field with its default in configs/default.py):

  name             'sgd' | 'adam' | 'adamw'
  learning_rate    peak learning rate (after warmup)
  schedule         'warmup_cosine' | 'warmup_linear' | 'constant' | 'piecewise'
  warmup_epochs    linear warmup 0 -> learning_rate over this many epochs (any schedule;
                   may be fractional). lr(step) = learning_rate * step / warmup_steps.
  min_lr           warmup_cosine / warmup_linear: value reached at the last step
                   (warmup_linear decays in a straight line: the budget-aware schedule of
                   Li et al., "Budgeted Training", ICLR 2020, for short runs)
  boundaries_epochs, decay_factor
                   piecewise: lr *= decay_factor from the first step of each listed epoch
  momentum, nesterov   sgd
  b1, b2, eps          adam / adamw
  weight_decay     adamw: DECOUPLED (optax.adamw style, update -= lr * wd * w);
                   adam / sgd: COUPLED L2, wd * w is added to the gradient before the
                   momentum / Adam moments (PyTorch `weight_decay=` semantics).
                   Either way only leaves named `kernel` with ndim > 1 are decayed, so
                   BatchNorm scale/bias and all biases are skipped.
  grad_clip_norm   clip the raw gradient to this global norm (0 = off); applied before
                   the coupled L2 term, like torch.nn.utils.clip_grad_norm_.
  freeze_backbone_epochs
                   fine-tuning warmup (0 = off): for this many epochs only the
                   `classifier` layer changes (a new head learns on the pretrained
                   features first); see `freeze_backbone`.

`config.ema_decay` (top level, 0 = off) is consumed by `init_ema` / `update_ema`.

The effective learning rate is `schedule(step) * plateau_scale`. The plateau scale is a
float32 scalar inside the optimizer state (last transform of the chain), so it is
checkpointed with `opt_state`, can be changed from the host between epochs with
`set_lr_scale`, and multiplies the whole update (incl. weight decay) without
recompiling the train step.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

Schedule = Callable[[Any], jax.Array]

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('warmup_cosine', 'warmup_linear', 'constant', 'piecewise')
DEFAULT_EMA_DECAY = 0.0


# ----------------------------------------------------------------------------- schedules


def build_schedule(
    cfg: ml_collections.ConfigDict,
    steps_per_epoch: int,
    num_epochs: int,
    peak: float | jax.Array | None = None,
) -> Schedule:
    """Returns a jittable `step -> lr` (float32) for the configured schedule.

    `peak` overrides `cfg.learning_rate`; it may be a traced float32 scalar (one model's
    value under `jax.vmap`, the sweep's vectorized training), so it is only ever used
    in array arithmetic."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(
            f'Unknown optimizer.schedule {cfg.schedule!r}; valid choices: {", ".join(SCHEDULES)}'
        )
    if steps_per_epoch <= 0 or num_epochs <= 0:
        raise ValueError(
            f'steps_per_epoch ({steps_per_epoch}) and num_epochs ({num_epochs}) must be > 0'
        )
    peak = float(cfg.learning_rate) if peak is None else peak
    total = steps_per_epoch * num_epochs
    warmup = int(round(float(cfg.get('warmup_epochs', 0.0)) * steps_per_epoch))
    if warmup >= total:
        # Not an error, so that short smoke runs work with the default config: the lr
        # then only ramps up and never reaches the decay phase.
        logging.getLogger(__name__).warning(
            'warmup (%d steps) >= training (%d steps): lr never leaves warmup', warmup, total
        )

    if cfg.schedule == 'constant':
        main = lambda step: jnp.full((), peak, jnp.float32)
    elif cfg.schedule == 'piecewise':
        # Decay takes effect from the first step of epoch e (absolute steps, warmup included).
        bounds = jnp.asarray(
            [int(round(float(e) * steps_per_epoch)) for e in cfg.boundaries_epochs], jnp.int32
        )
        factor = float(cfg.decay_factor)

        def main(step):
            n = jnp.sum(step >= bounds) if bounds.size else 0
            return jnp.asarray(peak * factor**n, jnp.float32)
    else:  # warmup_cosine, warmup_linear: from peak to min_lr over the steps after warmup
        end = float(cfg.min_lr)
        if cfg.schedule == 'warmup_linear':
            shape = lambda t: 1.0 - t
        else:
            shape = lambda t: 0.5 * (1.0 + jnp.cos(math.pi * t))
        span = float(max(total - warmup, 1))

        def main(step):
            # Clamped so that steps after `total` (e.g. an extra epoch) stay at min_lr.
            t = jnp.clip((step - warmup) / span, 0.0, 1.0)
            return jnp.asarray(end + (peak - end) * shape(t), jnp.float32)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if warmup == 0:
            return main(step)
        return jnp.where(step < warmup, jnp.asarray(peak * step / warmup, jnp.float32), main(step))

    return schedule


def length_free_steps(cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> float:
    """How many first steps have a learning rate that does not depend on num_epochs
    (math.inf for schedules that never do): a time-budgeted run trains them before it
    knows its final length (training/time_budget.py)."""
    if cfg.schedule in ('constant', 'piecewise'):
        return math.inf
    return int(round(float(cfg.get('warmup_epochs', 0.0)) * steps_per_epoch))


# ----------------------------------------------------------------- plateau scale transform


class PlateauScaleState(NamedTuple):
    """Host-settable multiplier of the learning rate (1.0 until a plateau reduces it)."""

    plateau_scale: jax.Array


def scale_by_plateau(initial_scale: float = 1.0) -> optax.GradientTransformation:
    """Multiplies updates by the scalar kept in its state (see `set_lr_scale`)."""

    def init_fn(params):
        del params
        return PlateauScaleState(jnp.asarray(initial_scale, jnp.float32))

    def update_fn(updates, state, params=None):
        del params
        s = state.plateau_scale
        return jax.tree.map(lambda u: u * s.astype(u.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def _is_plateau(x: Any) -> bool:
    return isinstance(x, PlateauScaleState)


def get_lr_scale(opt_state: Any) -> jax.Array:
    """Reads the plateau scale from an optimizer state built by `build_optimizer`."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_plateau) if _is_plateau(s)]
    if len(found) != 1:
        raise ValueError(f'Expected exactly one PlateauScaleState in opt_state, found {len(found)}')
    return found[0].plateau_scale


def set_lr_scale(opt_state: Any, scale: float) -> Any:
    """Returns `opt_state` with the plateau scale replaced (pure; works in and out of jit).

    Outside jit the new scalar is placed with the old one's sharding, so a state that
    is replicated over a mesh stays compatible with the jitted step's in_shardings.
    """
    get_lr_scale(opt_state)  # validates there is exactly one

    def replace(s):
        if not _is_plateau(s):
            return s
        old = s.plateau_scale
        new = jnp.asarray(scale, old.dtype)
        if isinstance(old, jax.Array) and not isinstance(old, jax.core.Tracer):
            new = jax.device_put(new, old.sharding)
        return PlateauScaleState(new)

    return jax.tree.map(replace, opt_state, is_leaf=_is_plateau)


def current_learning_rate(schedule: Schedule, opt_state: Any, step: Any) -> jax.Array:
    """Effective lr used for the update at `step` (pass state.step BEFORE apply_gradients).

    Jittable: compute it inside the train step and return it as the `learning_rate` metric.
    """
    return schedule(step) * get_lr_scale(opt_state)


# ----------------------------------------------------------------------------- optimizer


def _leaf_name(path: tuple) -> str:
    last = path[-1] if path else None
    for attr in ('key', 'name', 'idx'):
        if hasattr(last, attr):
            return str(getattr(last, attr))
    return str(last)


def weight_decay_mask(params: Any) -> Any:
    """True only for leaves named `kernel` with ndim > 1 (conv/dense weights).

    BatchNorm `scale`/`bias` and conv/dense `bias` are excluded: decaying them hurts
    accuracy and is not what the GhostNet/timm recipes do.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, x: _leaf_name(path) == 'kernel' and len(getattr(x, 'shape', ())) > 1, params
    )


def build_optimizer(
    cfg: ml_collections.ConfigDict,
    steps_per_epoch: int,
    num_epochs: int,
    params: Any = None,
    *,
    learning_rate: jax.Array | None = None,
    weight_decay: jax.Array | None = None,
) -> tuple[optax.GradientTransformation, Schedule]:
    """Builds the optax chain and returns `(tx, schedule)`; schedule(step) is the base lr.

    `params` (concrete or abstract) fixes the weight-decay mask; if None the mask is
    computed from the params passed to `tx.init`.

    `learning_rate` / `weight_decay` override the config's values with (possibly traced)
    arrays, so that models stacked under `jax.vmap` each train with their own value in one
    program. A given `weight_decay` always adds the decay transform, so the chain (and the
    optimizer state's structure) is the same for every model; a value of 0 adds exactly 0.
    """
    if cfg.name not in OPTIMIZERS:
        raise ValueError(
            f'Unknown optimizer.name {cfg.name!r}; valid choices: {", ".join(OPTIMIZERS)}'
        )
    schedule = build_schedule(cfg, steps_per_epoch, num_epochs, peak=learning_rate)
    wd = float(cfg.get('weight_decay', 0.0)) if weight_decay is None else weight_decay
    decays = weight_decay is not None or wd > 0
    mask = weight_decay_mask(params) if params is not None else weight_decay_mask

    parts: list[optax.GradientTransformation] = []
    if float(cfg.get('grad_clip_norm', 0.0)) > 0:
        parts.append(optax.clip_by_global_norm(float(cfg.grad_clip_norm)))
    if cfg.name in ('sgd', 'adam') and decays:
        parts.append(optax.add_decayed_weights(wd, mask))  # coupled L2: enters momentum/moments
    if cfg.name == 'sgd':
        if float(cfg.momentum) > 0:
            parts.append(optax.trace(decay=float(cfg.momentum), nesterov=bool(cfg.nesterov)))
    else:
        parts.append(optax.scale_by_adam(b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps)))
        if cfg.name == 'adamw' and decays:
            parts.append(optax.add_decayed_weights(wd, mask))  # decoupled, scaled by lr below
    parts.append(optax.scale_by_learning_rate(schedule))
    parts.append(scale_by_plateau())
    tx = optax.chain(*parts)
    frozen_steps = round(float(cfg.get('freeze_backbone_epochs', 0.0)) * steps_per_epoch)
    return (freeze_backbone(tx, frozen_steps) if frozen_steps > 0 else tx), schedule


HEAD = 'classifier'  # every registered model names its last layer so


class FrozenBackboneState(NamedTuple):
    count: jax.Array  # updates done
    inner: Any


def freeze_backbone(
    inner: optax.GradientTransformation, steps: int
) -> optax.GradientTransformation:
    """`inner`, except that its first `steps` updates change only the `classifier` layer
    (fine-tuning: a new head first learns on the pretrained features). The other
    gradients and params are zeroed before `inner` and its updates after, so the backbone
    does not move and no momentum builds up for it while frozen (Adam's step count does
    advance: its bias correction then damps the first free steps). BatchNorm statistics
    still follow the new data: they are not parameters."""

    def is_head(path) -> bool:
        return any(getattr(k, 'key', None) == HEAD for k in path)

    def init_fn(params):
        return FrozenBackboneState(jnp.zeros([], jnp.int32), inner.init(params))

    def update_fn(updates, state, params=None):
        frozen = state.count < steps

        def keep_head(tree):
            return jax.tree_util.tree_map_with_path(
                lambda path, u: u if is_head(path) else jnp.where(frozen, jnp.zeros_like(u), u),
                tree,
            )

        # The frozen leaves' params are hidden too (zeros), so weight decay adds nothing to
        # their momentum or moments while they wait.
        new, inner_state = inner.update(
            keep_head(updates), state.inner, None if params is None else keep_head(params)
        )
        return keep_head(new), FrozenBackboneState(state.count + 1, inner_state)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------- EMA


def init_ema(params: Any, decay: float) -> Any:
    """EMA starting point: a copy of params, or None when EMA is off (decay == 0)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f'ema_decay must be in [0, 1), got {decay}')
    return None if decay == 0.0 else jax.tree.map(jnp.array, params)


def ema_decay_at(decay: float, num_updates: jax.Array) -> jax.Array:
    """The decay used for update number `num_updates` (0-based): min(decay, (1 + t) / (10 + t)).

    Without this warmup the average starts as the random init and, at decay 0.999, still
    holds ~37% of it after 1,000 steps; with it the early average follows the weights
    closely (TensorFlow's ExponentialMovingAverage `num_updates` rule)."""
    t = jnp.asarray(num_updates, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + t) / (10.0 + t))


def update_ema(ema_params: Any, params: Any, decay: float | jax.Array) -> Any:
    """ema <- decay * ema + (1 - decay) * params (pure, jittable); None stays None."""
    if ema_params is None:
        return None
    return jax.tree.map(
        lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema_params, params
    )
