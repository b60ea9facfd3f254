"""Every registered model as a Flax NNX module, holding the Linen model's variable tree.

    module = to_nnx(create_model('ghostnet_cifar_100'))            # fresh weights, or
    module = to_nnx(trained.model, trained.variables)               # converted / trained ones
    logits = module(images, train=False)
    logits = module(images, train=True, mutable=['batch_stats'])   # BN statistics update in place
    variables = linen_variables(module)                 # back to {'params', 'batch_stats'}

The models are written in Linen; `flax.nnx.bridge.ToNNX` wraps one as an `nnx.Module` whose
state is the Linen tree itself (`nnx.state(module, nnx.Param)` has the paths of
variables['params'], BatchNorm statistics are `nnx.BatchStat`), so checkpoints and converted
weights move both ways unchanged, and `nnx.Optimizer`, `nnx.jit` and `nnx.value_and_grad`
work as on any NNX module (docs/serving.md has a training step).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx, traverse_util
from flax.nnx import bridge

# The NNX variable type of each Linen collection the models have (as ToNNX maps them).
_VARIABLE_TYPES = {'params': nnx.Param, 'batch_stats': nnx.BatchStat}


def _nnx_attributes(variables: Mapping[str, Any]) -> dict[str, Any]:
    """A Linen variable dict as the attributes ToNNX holds after its own initialization:
    one tree by submodule, params and batch statistics merged, each leaf an NNX variable
    of its collection's type. Built here from public API, so that given variables need no
    second, eager initialization."""
    merged = {}
    for collection, tree in variables.items():
        kind = _VARIABLE_TYPES.get(collection)
        if kind is None:
            raise ValueError(
                f'to_nnx holds {sorted(_VARIABLE_TYPES)}; got a {collection!r} collection.'
            )
        for path, leaf in traverse_util.flatten_dict(dict(tree)).items():
            merged[path] = kind(leaf)
    return traverse_util.unflatten_dict(merged)


def to_nnx(
    model: nn.Module,
    variables: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
) -> nnx.Module:
    """`model` (a Linen module from `create_model`) as an `nnx.Module`.

    `variables`: {'params', 'batch_stats'} to hold (a checkpoint's, converted weights);
    None initializes them from `seed` on an `input_shape` batch (default: one image of the
    smallest square size the model takes, at least 32x32). The module draws dropout masks
    from its own `nnx.Rngs` stream 'dropout' (seed + 1).
    """
    if variables is None:
        if input_shape is None:
            size = max(32, getattr(model, 'min_input_size', lambda: 32)())
            input_shape = (1, size, size, 3)
        init = jax.jit(lambda key, x: model.init(key, x, train=False))
        variables = init(jax.random.key(seed), jnp.zeros(input_shape, jnp.float32))
    module = bridge.ToNNX(model, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
    for name, value in _nnx_attributes(variables).items():
        setattr(module, name, nnx.data(value))
    return module


def linen_variables(module: nnx.Module) -> dict[str, Any]:
    """{'params', 'batch_stats'} of a `to_nnx` module, as the Linen model (and every
    checkpoint, `ghostnet_jax.load`, export) holds them."""
    return {
        'params': nnx.to_pure_dict(nnx.state(module, nnx.Param)),
        'batch_stats': nnx.to_pure_dict(nnx.state(module, nnx.BatchStat)),
    }
