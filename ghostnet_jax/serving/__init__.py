"""Using trained models: `load` -> `TrainedModel.predict`, and exports (ghostnet_jax.export)."""

from ghostnet_jax.serving.loading import TrainedModel, load
from ghostnet_jax.serving.preprocessing import Preprocessing

__all__ = ['Preprocessing', 'TrainedModel', 'load']
