"""GhostNet v1/v2/v3, the paper's CIFAR-10 networks, the original study's net and the
MobileNetV3 reference, as Flax Linen modules (NHWC)."""

from ghostnet_jax.models import (  # noqa: F401  (registers the models)
    cifar_nets,
    ghostnet,
    mobilenetv3,
    study_net,
)
from ghostnet_jax.models.ghost_blocks import (
    ConvBnAct,
    DFCAttention,
    GhostBottleneck,
    GhostModule,
    SqueezeExcite,
)
from ghostnet_jax.models.ghostnet import GHOSTNET_STAGES, BlockSpec, GhostNet
from ghostnet_jax.models.layers import BatchNorm, Conv, conv_native, conv_shifted, make_divisible
from ghostnet_jax.models.registry import create_model, list_models, register_model
from ghostnet_jax.models.reparameterize import reparameterize

__all__ = [
    'BatchNorm',
    'BlockSpec',
    'Conv',
    'ConvBnAct',
    'DFCAttention',
    'GHOSTNET_STAGES',
    'GhostBottleneck',
    'GhostModule',
    'GhostNet',
    'SqueezeExcite',
    'conv_native',
    'conv_shifted',
    'create_model',
    'list_models',
    'make_divisible',
    'register_model',
    'reparameterize',
]
