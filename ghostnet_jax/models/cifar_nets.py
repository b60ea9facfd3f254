"""The paper's CIFAR-10 testbeds (Table 3): VGG-16 and ResNet-56, plain and Ghost.

Ghost versions replace every convolution except the first by a Ghost module whose primary
conv keeps the original 3x3 kernel (and stride), with ratio `s` and cheap kernel `d`.
VGG-16 is the CIFAR variant of Li et al. (ICLR 2017) that the paper compares against:
13 conv-BN-ReLU layers, 5 max-pools, then 512 -> 512 (BN, ReLU) -> classes.
ResNet-56 is He et al.'s CIFAR ResNet (16/32/64 widths, 9 basic blocks a stage) with the
parameter-free "option A" shortcut (stride-2 subsampling + zero channel padding).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ghostnet_jax.models.ghost_blocks import ConvBnAct, GhostModule
from ghostnet_jax.models.layers import Dtype, layer_defs
from ghostnet_jax.models.registry import register_model

VGG16_LAYOUT = (
    64,
    64,
    'M',
    128,
    128,
    'M',
    256,
    256,
    256,
    'M',
    512,
    512,
    512,
    'M',
    512,
    512,
    512,
    'M',
)
RESNET56_STAGES = ((16, 9, 1), (32, 9, 2), (64, 9, 2))  # (width, blocks, first stride)


class _ConvOrGhost(nn.Module):
    """A 3x3 conv-BN[-ReLU], or the Ghost module that replaces it."""

    features: int
    stride: int
    relu: bool
    ghost: bool
    ratio: int
    dw_size: int
    conv: Any
    norm: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.ghost:
            return GhostModule(
                self.features,
                self.ratio,
                kernel_size=3,
                dw_size=self.dw_size,
                stride=self.stride,
                relu=self.relu,
                conv=self.conv,
                norm=self.norm,
                name='ghost',
            )(x, train)
        return ConvBnAct(
            self.features,
            3,
            self.stride,
            relu=self.relu,
            conv=self.conv,
            norm=self.norm,
            name='conv_bn',
        )(x, train)


class _CifarNet(nn.Module):
    """Fields shared by the Table 3 networks; `ghost` swaps their convs for Ghost modules."""

    num_classes: int = 10
    ghost: bool = False
    ratio: int = 2
    dw_size: int = 3
    dropout_rate: float = 0.0  # before the classifier; the paper's nets use none
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = 'auto'
    bn_axis_name: str | None = None


class VGG16(_CifarNet):
    def parameter_group(self, name: str) -> str:
        """stage<k>: the convs before the k-th max-pool; head: the classifier layers."""
        if not name.startswith('features_'):
            return 'head'
        convs_before = int(name.split('_')[1])
        pools = 0
        for item in VGG16_LAYOUT:
            if item == 'M':
                pools += 1
            elif convs_before == 0:
                return f'stage{pools}'
            else:
                convs_before -= 1
        return 'head'

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv, norm = layer_defs(self.dtype, self.param_dtype, self.conv_impl, self.bn_axis_name)
        conv_index = 0
        for item in VGG16_LAYOUT:
            if item == 'M':
                x = nn.max_pool(x, (2, 2), (2, 2))
                continue
            x = _ConvOrGhost(
                item,
                1,
                True,
                self.ghost and conv_index > 0,
                self.ratio,
                self.dw_size,
                conv,
                norm,
                name=f'features_{conv_index}',
            )(x, train)
            conv_index += 1
        x = x.reshape(x.shape[0], -1)
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.Dense(512, **dense, name='fc1')(x)
        x = nn.relu(norm(use_running_average=not train, name='fc1_bn')(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, **dense, name='classifier')(x)


class ResNet56(_CifarNet):
    """He et al.'s CIFAR ResNet-56. `zero_init_last`: the last BatchNorm of every residual
    branch starts with scale 0, so each block starts as the identity (Goyal et al. 2017;
    timm's ResNets do the same). Without it, 27 blocks of He-initialized branches sum to
    logits large enough that the loss at init is 2x ln(10) (4.7-4.9 on CIFAR-10 images,
    `python -m ghostnet_jax.sanity`), and a constant learning rate of 0.1 barely fits a
    fixed batch. Parameter counts are the same either way."""

    zero_init_last: bool = True

    def parameter_group(self, name: str) -> str:
        if name.startswith('stage'):
            return name.split('_')[0]
        return 'stem' if name == 'stem' else 'head'

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv, norm = layer_defs(self.dtype, self.param_dtype, self.conv_impl, self.bn_axis_name)
        x = ConvBnAct(16, 3, conv=conv, norm=norm, name='stem')(x, train)
        layer = dict(ghost=self.ghost, ratio=self.ratio, dw_size=self.dw_size, conv=conv, norm=norm)
        for stage, (width, blocks, first_stride) in enumerate(RESNET56_STAGES):
            for block in range(blocks):
                stride = first_stride if block == 0 else 1
                y = _ConvOrGhost(width, stride, True, **layer, name=f'stage{stage}_{block}_conv1')(
                    x, train
                )
                last = dict(
                    layer,
                    norm=functools.partial(norm, scale_init=nn.initializers.zeros)
                    if self.zero_init_last
                    else norm,
                )
                y = _ConvOrGhost(width, 1, False, **last, name=f'stage{stage}_{block}_conv2')(
                    y, train
                )
                if stride != 1 or x.shape[-1] != width:
                    # Option A: subsample and zero-pad the new channels; no parameters.
                    x = x[:, ::stride, ::stride, :]
                    extra = width - x.shape[-1]
                    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
                x = nn.relu(x + y)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(
            self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name='classifier'
        )(x)


@register_model
def vgg16(**overrides: Any) -> VGG16:
    """VGG-16 for CIFAR (Li et al.), the paper's Table 3 baseline."""
    return VGG16(**overrides)


@register_model
def ghost_vgg16(**overrides: Any) -> VGG16:
    """Ghost-VGG-16 (s=2, d=3 by default; override `ratio`, `dw_size`)."""
    return VGG16(**{'ghost': True, **overrides})


@register_model
def resnet56(**overrides: Any) -> ResNet56:
    """ResNet-56 for CIFAR (He et al., option-A shortcuts), the paper's Table 3 baseline."""
    return ResNet56(**overrides)


@register_model
def ghost_resnet56(**overrides: Any) -> ResNet56:
    """Ghost-ResNet-56 (s=2, d=3 by default; override `ratio`, `dw_size`)."""
    return ResNet56(**{'ghost': True, **overrides})
