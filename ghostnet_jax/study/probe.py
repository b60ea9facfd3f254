"""One compiled train step on an experiment's own data, driven outside the trainer loop:
what the sanity checks and the LR range test run step by step."""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import ml_collections

from ghostnet_jax.training import steps
from ghostnet_jax.training.experiment import Experiment, build_experiment
from ghostnet_jax.training.optim import build_optimizer
from ghostnet_jax.training.parallel import make_mesh

StepFn = Callable[[object, dict], tuple[object, dict]]


@dataclasses.dataclass
class Probe:
    config: ml_collections.ConfigDict
    exp: Experiment
    step: StepFn     # jitted (state, batch) -> (state, metrics), the trainer's train_step


def build_probe(config: ml_collections.ConfigDict,
                learning_rate: Callable[[jax.Array], jax.Array] | None = None) -> Probe:
    """`learning_rate(step)` replaces the configured schedule (the LR range test's ramp);
    it enters the project's optimizer as its peak, so the optimizer is the one train uses."""
    exp = build_experiment(config, make_mesh())
    spe = exp.train_data.steps_per_epoch

    def step(state, batch):
        tx, schedule = exp.tx, exp.schedule
        if learning_rate is not None:
            tx, schedule = build_optimizer(config.optimizer, spe, config.num_epochs, state.params,
                                           learning_rate=learning_rate(state.step))
        return steps.train_step(state, batch, model=exp.model, tx=tx, schedule=schedule,
                                seed=config.seed, label_smoothing=config.label_smoothing,
                                ema_decay=config.ema_decay)

    return Probe(config, exp, jax.jit(step))


def copy_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A private copy: the command-line config is locked and shared with absl's flags."""
    return config.copy_and_resolve_references()
