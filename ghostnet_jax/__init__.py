"""ghostnet_jax: GhostNet in JAX/Flax and a tested CIFAR-10 training workflow."""
from ghostnet_jax.models import create_model, list_models

__version__ = '0.1.0'
__all__ = ['create_model', 'list_models', '__version__']
