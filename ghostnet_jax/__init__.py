"""ghostnet_jax: GhostNet in JAX/Flax and a tested CIFAR-10 training workflow."""
from typing import Any

from ghostnet_jax.models import create_model, list_models

__version__ = '0.1.0'
__all__ = ['TrainedModel', '__version__', 'create_model', 'list_models', 'load']


def __getattr__(name: str) -> Any:
    # `load`/`TrainedModel` pull in orbax (~0.7 s): imported on first use, so that
    # `import ghostnet_jax` for the models alone stays as fast as it was.
    if name in ('load', 'TrainedModel'):
        from ghostnet_jax import serving
        return getattr(serving, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
