"""Ghost module, squeeze-excite and Ghost bottleneck, as in the official PyTorch GhostNet.

Submodule names mirror the official state_dict keys (primary_conv, cheap_operation, conv_dw,
se.conv_reduce, shortcut, ...) so that weight import is a mechanical rename.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ghostnet_jax.models.layers import BatchNorm, Conv, ModuleDef, hard_sigmoid, make_divisible


class ConvBnAct(nn.Module):
    """conv -> BatchNorm -> optional ReLU (official key layout: conv, bn1)."""
    features: int
    kernel_size: int = 1
    stride: int = 1
    relu: bool = True
    conv: ModuleDef = Conv
    norm: ModuleDef = BatchNorm

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.conv(self.features, self.kernel_size, self.stride, name='conv')(x)
        x = self.norm(use_running_average=not train, name='bn1')(x)
        return nn.relu(x) if self.relu else x


class GhostModule(nn.Module):
    """A few "intrinsic" maps from an ordinary conv, the rest from a cheap depthwise conv on them.

    primary: conv(kernel_size, stride) to ceil(features / ratio) channels, BN, [ReLU];
    cheap: depthwise dw_size conv with channel multiplier ratio - 1 on the primary output,
    BN, [ReLU]; output: concat, sliced to `features`.
    """
    features: int
    ratio: int = 2
    kernel_size: int = 1
    dw_size: int = 3
    stride: int = 1
    relu: bool = True
    conv: ModuleDef = Conv
    norm: ModuleDef = BatchNorm

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.ratio < 2:
            raise ValueError(f'GhostModule ratio must be >= 2, got {self.ratio}.')
        act = nn.relu if self.relu else (lambda y: y)
        init_features = math.ceil(self.features / self.ratio)
        primary = self.conv(init_features, self.kernel_size, self.stride, name='primary_conv')(x)
        primary = act(self.norm(use_running_average=not train, name='primary_bn')(primary))
        cheap = self.conv(init_features * (self.ratio - 1), self.dw_size, groups=init_features,
                          name='cheap_operation')(primary)
        cheap = act(self.norm(use_running_average=not train, name='cheap_bn')(cheap))
        return jnp.concatenate([primary, cheap], axis=-1)[..., :self.features]


class SqueezeExcite(nn.Module):
    """Channel gate: mean -> 1x1 conv (bias) -> ReLU -> 1x1 conv (bias) -> hard sigmoid."""
    se_ratio: float = 0.25
    divisor: int = 4
    conv: ModuleDef = Conv

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        reduced = make_divisible(channels * self.se_ratio, self.divisor)
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.relu(self.conv(reduced, use_bias=True, name='conv_reduce')(s))
        s = self.conv(channels, use_bias=True, name='conv_expand')(s)
        return x * hard_sigmoid(s)


class GhostBottleneck(nn.Module):
    """ghost1 (ReLU) -> [stride-2 depthwise + BN] -> [SE] -> ghost2 (linear), plus shortcut.

    The shortcut is the identity iff input and output widths match and stride is 1; otherwise
    depthwise conv + BN + 1x1 conv + BN. There is no activation after the sum.
    """
    mid_features: int
    out_features: int
    dw_kernel: int = 3
    stride: int = 1
    se_ratio: float = 0.0
    conv: ModuleDef = Conv
    norm: ModuleDef = BatchNorm

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        in_features = x.shape[-1]
        ghost = dict(conv=self.conv, norm=self.norm)
        y = GhostModule(self.mid_features, relu=True, name='ghost1', **ghost)(x, train)
        if self.stride > 1:
            y = self.conv(self.mid_features, self.dw_kernel, self.stride,
                          groups=self.mid_features, name='conv_dw')(y)
            y = self.norm(use_running_average=not train, name='bn_dw')(y)
        if self.se_ratio:
            y = SqueezeExcite(self.se_ratio, conv=self.conv, name='se')(y)
        y = GhostModule(self.out_features, relu=False, name='ghost2', **ghost)(y, train)

        if in_features == self.out_features and self.stride == 1:
            return y + x
        s = self.conv(in_features, self.dw_kernel, self.stride, groups=in_features,
                      name='shortcut_dw')(x)
        s = self.norm(use_running_average=not train, name='shortcut_dw_bn')(s)
        s = self.conv(self.out_features, 1, name='shortcut_pw')(s)
        s = self.norm(use_running_average=not train, name='shortcut_pw_bn')(s)
        return y + s
