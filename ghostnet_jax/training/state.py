"""The train state: everything the device updates each step, as one pytree."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ghostnet_jax.training.optim import init_ema


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # global step (int32); epoch and position derive from it
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any  # None when EMA is off
    # BatchNorm running statistics averaged like the params (timm's ModelEmaV2 does the
    # same): EMA weights evaluated with the live statistics would mismatch them.
    ema_batch_stats: Any  # None when EMA is off
    # First step whose loss was not finite, or -1. Set on device so that the host need not
    # sync every step; once set, further updates are skipped and the state stays good.
    nonfinite_step: jax.Array


def init_variables(model: nn.Module, seed: int, image_shape: tuple[int, ...]) -> dict:
    """Initial {'params', 'batch_stats'} for images of `image_shape` (H, W, C).

    Uses the 'rbg' PRNG: compiling GhostNet's init with the default threefry PRNG takes
    1.5-2x longer on CPU (31 s vs 20 s for ghostnet_cifar_050, measured), and init runs
    once per run, so its values only need to be deterministic, which rbg is per backend.
    """
    images = jnp.zeros((1, *image_shape), jnp.float32)
    return jax.jit(lambda: model.init(jax.random.key(seed, impl='rbg'), images, train=False))()


def create_train_state(
    variables: dict, tx: optax.GradientTransformation, ema_decay: float
) -> TrainState:
    """The state before step 1. Built in one compiled program: run eagerly, the optimizer's
    zeros (one per distinct parameter shape) were as many tiny compilations, ~0.4 s of
    every run's start for the 3-block test net and more for the real widths."""

    def build(variables: dict) -> TrainState:
        params = variables['params']
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get('batch_stats', {}),
            opt_state=tx.init(params),
            ema_params=init_ema(params, ema_decay),
            ema_batch_stats=init_ema(variables.get('batch_stats', {}), ema_decay),
            nonfinite_step=jnp.full((), -1, jnp.int32),
        )

    return jax.jit(build)(variables)


def eval_variables(state: TrainState) -> dict:
    """The weights to evaluate: the EMA params and BatchNorm statistics when kept, else the
    live ones."""
    if state.ema_params is not None:
        return {'params': state.ema_params, 'batch_stats': state.ema_batch_stats}
    return {'params': state.params, 'batch_stats': state.batch_stats}
