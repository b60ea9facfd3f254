"""Model registry: one name -> one constructor, as in timm."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class ModelInputError(ValueError):
    """Images a model cannot take, e.g. too small for its strides (exit code 2 in the
    commands: the fix is another model or input size, not a code change)."""


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Registers a constructor under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f'Model {fn.__name__!r} is registered twice.')
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Builds a registered model; `overrides` replace its fields (num_classes, dtype, ...).

    The result is a Linen module: `model.init(rng, images, train=False)` and
    `model.apply(variables, images, train=bool, rngs=..., mutable=...)`.
    """
    if name not in _REGISTRY:
        raise ValueError(f'Unknown model {name!r}. Valid names: {", ".join(list_models())}.')
    try:
        return _REGISTRY[name](**overrides)
    except TypeError as e:
        raise ValueError(f'Bad override for model {name!r}: {e}') from e
