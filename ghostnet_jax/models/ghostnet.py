"""GhostNet (Han et al., CVPR 2020), faithful to the official PyTorch code and timm.

The whole architecture is the table below; width scaling, the CIFAR strides and the head
are the only other decisions.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ghostnet_jax.models.ghost_blocks import ConvBnAct, GhostBottleneck
from ghostnet_jax.models.layers import Dtype, layer_defs, make_divisible
from ghostnet_jax.models.registry import register_model


class BlockSpec(NamedTuple):
    kernel: int      # depthwise kernel of the stride-2 conv and of the shortcut
    hidden: int      # width of ghost1's output ("expansion size")
    out: int         # block output width
    se_ratio: float  # 0 = no squeeze-excite
    stride: int


# One inner tuple per stage (official `cfgs`); 16 bottlenecks in all.
GHOSTNET_STAGES: tuple[tuple[BlockSpec, ...], ...] = tuple(
    tuple(BlockSpec(*row) for row in stage) for stage in (
        ((3, 16, 16, 0, 1),),
        ((3, 48, 24, 0, 2),),
        ((3, 72, 24, 0, 1),),
        ((5, 72, 40, 0.25, 2),),
        ((5, 120, 40, 0.25, 1),),
        ((3, 240, 80, 0, 2),),
        ((3, 200, 80, 0, 1),
         (3, 184, 80, 0, 1),
         (3, 184, 80, 0, 1),
         (3, 480, 112, 0.25, 1),
         (3, 672, 112, 0.25, 1)),
        ((5, 672, 160, 0.25, 2),),
        ((5, 960, 160, 0, 1),
         (5, 960, 160, 0.25, 1),
         (5, 960, 160, 0, 1),
         (5, 960, 160, 0.25, 1)),
    ))
STEM_FEATURES = 16
HEAD_FEATURES = 1280


class GhostNet(nn.Module):
    """GhostNet classifier on NHWC images.

    `stem_stride` and `stride_one_blocks` (flat bottleneck indices forced to stride 1) adapt
    the ImageNet network to 32x32 inputs without touching the table.
    """
    num_classes: int = 1000
    width: float = 1.0
    dropout_rate: float = 0.2
    stem_stride: int = 2
    stride_one_blocks: tuple[int, ...] = ()
    stages: tuple[tuple[BlockSpec, ...], ...] = GHOSTNET_STAGES
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = 'auto'
    bn_axis_name: str | None = None

    def parameter_group(self, name: str) -> str:
        """The stage a top-level submodule belongs to (per-stage gradient norms): the stem,
        stage<k> for the bottlenecks of table row group k, the head."""
        if name.startswith('blocks_'):
            return f'stage{name.split("_")[1]}'
        return 'stem' if name in ('conv_stem', 'bn1') else 'head'

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv, norm = layer_defs(self.dtype, self.param_dtype, self.conv_impl, self.bn_axis_name)
        x = conv(make_divisible(STEM_FEATURES * self.width), 3, self.stem_stride,
                 name='conv_stem')(x)
        x = nn.relu(norm(use_running_average=not train, name='bn1')(x))

        block_index = 0
        for stage_index, stage in enumerate(self.stages):
            for layer_index, spec in enumerate(stage):
                stride = 1 if block_index in self.stride_one_blocks else spec.stride
                x = GhostBottleneck(
                    make_divisible(spec.hidden * self.width), make_divisible(spec.out * self.width),
                    spec.kernel, stride, spec.se_ratio, conv=conv, norm=norm,
                    name=f'blocks_{stage_index}_{layer_index}')(x, train)
                block_index += 1
        last_hidden = self.stages[-1][-1].hidden
        x = ConvBnAct(make_divisible(last_hidden * self.width), conv=conv, norm=norm,
                      name=f'blocks_{len(self.stages)}_0')(x, train)

        x = jnp.mean(x, axis=(1, 2), keepdims=True)
        # conv_head is a 1x1 conv with bias and no BN, applied after pooling (official order).
        x = nn.relu(conv(HEAD_FEATURES, use_bias=True, name='conv_head')(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                        name='classifier')(x)


def _ghostnet(width: float, **overrides: Any) -> GhostNet:
    return GhostNet(**{'width': width, **overrides})


# CIFAR (32x32): stem stride 1 and bottleneck 1 stride 1 -> output stride 8, a 4x4 final map.
CIFAR_OVERRIDES = dict(num_classes=10, stem_stride=1, stride_one_blocks=(1,))


def _ghostnet_cifar(width: float, **overrides: Any) -> GhostNet:
    return GhostNet(**{'width': width, **CIFAR_OVERRIDES, **overrides})


@register_model
def ghostnet_050(**overrides: Any) -> GhostNet:
    """GhostNet 0.5x, ImageNet strides (output stride 32)."""
    return _ghostnet(0.5, **overrides)


@register_model
def ghostnet_100(**overrides: Any) -> GhostNet:
    """GhostNet 1.0x, ImageNet strides (output stride 32)."""
    return _ghostnet(1.0, **overrides)


@register_model
def ghostnet_130(**overrides: Any) -> GhostNet:
    """GhostNet 1.3x, ImageNet strides (output stride 32)."""
    return _ghostnet(1.3, **overrides)


@register_model
def ghostnet_cifar_050(**overrides: Any) -> GhostNet:
    """GhostNet 0.5x for 32x32 inputs, 10 classes."""
    return _ghostnet_cifar(0.5, **overrides)


@register_model
def ghostnet_cifar_100(**overrides: Any) -> GhostNet:
    """GhostNet 1.0x for 32x32 inputs, 10 classes."""
    return _ghostnet_cifar(1.0, **overrides)


@register_model
def ghostnet_cifar_130(**overrides: Any) -> GhostNet:
    """GhostNet 1.3x for 32x32 inputs, 10 classes."""
    return _ghostnet_cifar(1.3, **overrides)


# Three bottlenecks covering every block kind (identity, stride-2 + projection shortcut,
# 5x5 with SE): the smallest network that exercises all the code, for tests and smoke runs.
TINY_STAGES = tuple(tuple(BlockSpec(*row) for row in stage) for stage in (
    ((3, 16, 16, 0, 1),), ((3, 48, 24, 0, 2),), ((5, 72, 40, 0.25, 2),)))


@register_model
def ghostnet_cifar_tiny(**overrides: Any) -> GhostNet:
    """Not from the paper: 3 bottlenecks at 0.25x for tests and smoke runs (CIFAR strides)."""
    return GhostNet(**{'width': 0.25, 'stages': TINY_STAGES, **CIFAR_OVERRIDES,
                       'stride_one_blocks': (), **overrides})
