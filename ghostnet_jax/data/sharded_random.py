"""Per-example random values that follow the batch's sharding.

Every augmentation draws its random values at global batch shape, so they do not
depend on how the batch is split over devices; this module only places them.
"""

from __future__ import annotations

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def batch_like(values: jax.Array, images: jax.Array) -> jax.Array:
    """Gives per-example values (leading axis B) the batch sharding of ``images``.

    Only matters under an Explicit-axes mesh (``jax.make_mesh``'s default), where
    mixing a batch-sharded and a replicated operand is a type error; the values
    themselves are drawn at global shape either way, so they never depend on sharding.
    """
    sharding = getattr(jax.typeof(images), 'sharding', None)
    spec = getattr(sharding, 'spec', ())
    if not spec or spec[0] is None:
        return values
    return jax.sharding.reshard(
        values, NamedSharding(sharding.mesh, P(spec[0], *[None] * (values.ndim - 1)))
    )
