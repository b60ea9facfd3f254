"""One compiled train step on an experiment's own data, driven outside the trainer loop:
what the sanity checks and the LR range test run step by step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from ghostnet_jax.training import steps
from ghostnet_jax.training.experiment import Experiment, build_experiment
from ghostnet_jax.training.optim import build_optimizer
from ghostnet_jax.training.parallel import make_mesh


@dataclasses.dataclass
class Probe:
    config: ml_collections.ConfigDict
    experiment: Experiment
    _step: Callable

    def step(self, state, batch: dict, learning_rate: float | None = None) -> tuple[object, dict]:
        """The trainer's train_step with the config's optimizer at `learning_rate` (default:
        the config's). The rate is a runtime argument, so one compiled program serves every
        rate: the LR ramp, and reruns at other rates load it from the compilation cache."""
        lr = self.config.optimizer.learning_rate if learning_rate is None else learning_rate
        return self._step(state, batch, jnp.float32(lr))


def build_probe(config: ml_collections.ConfigDict) -> Probe:
    """Use a config with a constant schedule: the rate given to `step` is then the rate."""
    experiment = build_experiment(config, make_mesh())
    steps_per_epoch = experiment.train_data.steps_per_epoch

    def step(state, batch, learning_rate):
        tx, schedule = build_optimizer(
            config.optimizer,
            steps_per_epoch,
            config.num_epochs,
            state.params,
            learning_rate=learning_rate,
        )
        return steps.train_step(
            state,
            batch,
            model=experiment.model,
            tx=tx,
            schedule=schedule,
            seed=config.seed,
            label_smoothing=config.label_smoothing,
            ema_decay=config.ema_decay,
        )

    return Probe(config, experiment, jax.jit(step))


def copy_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A private copy: the command-line config is locked and shared with absl's flags."""
    return config.copy_and_resolve_references()
