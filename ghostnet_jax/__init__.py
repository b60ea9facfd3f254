"""ghostnet_jax: GhostNet in JAX/Flax and a tested CIFAR-10 training workflow."""

from typing import Any

__version__ = '0.1.0'
__all__ = ['TrainedModel', '__version__', 'create_model', 'list_models', 'load']


def __getattr__(name: str) -> Any:
    # Imported on first use: the commands start (and may restart themselves with another
    # allocator, ghostnet_jax/cli/process.py) before anything imports JAX, and `load`
    # pulls in orbax (~0.7 s), which the models alone do not need.
    if name in ('create_model', 'list_models'):
        from ghostnet_jax import models

        return getattr(models, name)
    if name in ('load', 'TrainedModel'):
        from ghostnet_jax import serving

        return getattr(serving, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
