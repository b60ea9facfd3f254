"""Ghost module, squeeze-excite and Ghost bottleneck, as in the official PyTorch GhostNet,
with the additions of its successors (both also in timm):

- GhostNetV2 (Tang et al., NeurIPS 2022): DFC attention, a sigmoid gate computed from a
  2x-downsampled copy of a Ghost module's input by a 1x1 conv and 1x5 / 5x1 depthwise convs
  (`DFCAttention`), multiplying the module's output.
- GhostNetV3 (Liu et al., 2024): every conv of the Ghost modules and the stride-2 depthwise
  conv trained as a sum of re-parameterizable branches (`rep_conv_bn`), which
  `ghostnet_jax.models.reparameterize` folds into one conv with bias for inference.

Submodule names mirror the official state_dict keys (primary_conv, cheap_operation, conv_dw,
se.conv_reduce, shortcut, ...) so that weight import is a mechanical rename.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ghostnet_jax.models.layers import BatchNorm, Conv, ModuleDef, hard_sigmoid, make_divisible
from ghostnet_jax.models.registry import ModelInputError

# A conv that GhostNetV3 re-parameterizes: its branch prefix -> (the conv's name, its
# BatchNorm's name) in the plain (v1/v2) block. The folded conv keeps the conv's name.
REP_CONVS = {
    'primary': ('primary_conv', 'primary_bn'),
    'cheap': ('cheap_operation', 'cheap_bn'),
    'dw': ('conv_dw', 'bn_dw'),
}


class ConvBnAct(nn.Module):
    """conv -> BatchNorm -> optional ReLU (official key layout: conv, bn1)."""

    features: int
    kernel_size: int = 1
    stride: int = 1
    relu: bool = True
    conv: ModuleDef = Conv
    norm: ModuleDef = BatchNorm
    groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.conv(
            self.features, self.kernel_size, self.stride, groups=self.groups, name='conv'
        )(x)
        x = self.norm(use_running_average=not train, name='bn1')(x)
        return nn.relu(x) if self.relu else x


def conv_bn(
    x: jax.Array,
    prefix: str,
    features: int,
    kernel: int,
    stride: int,
    groups: int,
    branches: int,
    reparameterized: bool,
    conv: ModuleDef,
    norm: ModuleDef,
    train: bool,
) -> jax.Array:
    """conv -> BN, in one of three forms; call it inside a compact method (the layers it
    makes belong to the caller, named as the official code names them).

    branches == 0 (v1, v2): one conv and its BN, named REP_CONVS[prefix].
    branches > 0, training form (v3): the sum of `branches` kxk conv-BN branches
      ({prefix}_rpr_conv_{i}), a 1x1 conv-BN "scale" branch ({prefix}_rpr_scale) when the
      kernel is larger than 1x1, and a BN of the input itself ({prefix}_rpr_skip) when
      shapes allow an identity (stride 1, as many output as input channels).
    reparameterized (v3 for inference): the one conv with bias those branches fold into.
    """
    conv_name, bn_name = REP_CONVS[prefix]
    if branches == 0:
        x = conv(features, kernel, stride, groups=groups, name=conv_name)(x)
        return norm(use_running_average=not train, name=bn_name)(x)
    if reparameterized:
        return conv(features, kernel, stride, groups=groups, use_bias=True, name=conv_name)(x)
    branch = dict(relu=False, conv=conv, norm=norm, groups=groups)
    out = sum(
        ConvBnAct(features, kernel, stride, **branch, name=f'{prefix}_rpr_conv_{i}')(x, train)
        for i in range(branches)
    )
    if kernel > 1:
        # A 1x1 stride-s conv with no padding sees exactly the centre tap of a kxk stride-s
        # conv padded k // 2, so folding pads its kernel to kxk.
        out = out + ConvBnAct(features, 1, stride, **branch, name=f'{prefix}_rpr_scale')(x, train)
    if stride == 1 and x.shape[-1] == features:
        out = out + norm(use_running_average=not train, name=f'{prefix}_rpr_skip')(x)
    return out


def avg_pool_2x2(x: jax.Array, train: bool = True) -> jax.Array:
    """2x2 average pooling, stride 2, an odd last row/column dropped (PyTorch's floor mode):
    in training a reshape + mean, in inference `nn.avg_pool`, which exports as one pooling
    op (LiteRT's AVERAGE_POOL_2D, run by its XNNPACK delegate, not a 6-D RESHAPE + SUM)."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    if not train:
        return nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample_nearest(x: jax.Array, height: int, width: int, train: bool = True) -> jax.Array:
    """PyTorch's F.interpolate(mode='nearest') of an NHWC map to (height, width).

    Output index i reads input index floor(i * in / out), not the half-pixel-centred rule of
    jax.image.resize: for the odd sizes DFC attention meets (7 -> pooled 3 -> 7) they differ
    (PyTorch reads rows 0,0,0,1,1,2,2; half-pixel centres read 0,0,1,1,2,2,2). For an exact
    2x both rules read floor(i / 2), and the two formulations below compute the same copy:
    in training a broadcast (jnp.repeat; jax.image.resize is a gather, whose gradient is a
    scatter), in inference on static shapes jax.image.resize, which exports as one resize
    op (LiteRT's RESIZE_NEAREST_NEIGHBOR: its XNNPACK delegate runs it, while the
    broadcast's BROADCAST_TO falls back to the reference kernels and made GhostNetV2 ~3x
    slower there: docs/serving.md#inference-speed).
    """
    n, h, w, c = x.shape
    static = all(isinstance(d, int) for d in x.shape)  # jax2onnx's resize: no symbolic batch
    if not train and static and (height, width) == (2 * h, 2 * w):
        return jax.image.resize(x, (n, height, width, c), 'nearest')
    for axis, out_size in ((1, height), (2, width)):
        in_size = x.shape[axis]
        if out_size == in_size:
            continue
        if out_size == 2 * in_size:
            x = jnp.repeat(x, 2, axis=axis)
            continue
        x = jnp.take(x, np.arange(out_size) * in_size // out_size, axis=axis)
    return x


class DFCAttention(nn.Module):
    """GhostNetV2's decoupled fully connected attention: the gate of a Ghost module.

    2x2 average pooling (stride 2, floor: an odd last row/column is dropped) -> conv
    (kernel_size, stride of the module's primary conv) -> BN -> 1x5 depthwise -> BN -> 5x1
    depthwise -> BN -> sigmoid -> nearest-neighbour upsampling (PyTorch's rule) to
    `out_hw`. The long 1x5 / 5x1 kernels on the half-size map give every output pixel a
    receptive field of 10 rows and 10 columns at the cost of 10 MACs per pixel and channel.
    """

    features: int
    kernel_size: int = 1
    stride: int = 1
    conv: ModuleDef = Conv
    norm: ModuleDef = BatchNorm

    @nn.compact
    def __call__(self, x: jax.Array, out_hw: tuple[int, int], train: bool = False) -> jax.Array:
        n, h, w, c = x.shape
        if h < 2 or w < 2:
            raise ModelInputError(
                f'DFC attention average-pools its input by 2, but gets a {h}x{w} map: the '
                'input image is too small for this network (GhostNetV2/V3 with ImageNet '
                'strides need at least 33x33; for 32x32 images use a CIFAR variant such as '
                'ghostnetv2_cifar_100).'
            )
        pooled = avg_pool_2x2(x, train)
        dw = dict(groups=self.features)
        y = self.conv(self.features, self.kernel_size, self.stride, name='conv')(pooled)
        y = self.norm(use_running_average=not train, name='bn')(y)
        y = self.conv(self.features, (1, 5), **dw, name='conv_h')(y)
        y = self.norm(use_running_average=not train, name='bn_h')(y)
        y = self.conv(self.features, (5, 1), **dw, name='conv_v')(y)
        y = self.norm(use_running_average=not train, name='bn_v')(y)
        return upsample_nearest(jax.nn.sigmoid(y), *out_hw, train=train)


class GhostModule(nn.Module):
    """A few "intrinsic" maps from an ordinary conv, the rest from a cheap depthwise conv on them.

    primary: conv(kernel_size, stride) to ceil(features / ratio) channels, BN, [ReLU];
    cheap: depthwise dw_size conv with channel multiplier ratio - 1 on the primary output,
    BN, [ReLU]; output: concat, sliced to `features`. With `dfc` (v2, v3) the output is
    multiplied by `DFCAttention` of the input; with `branches` > 0 (v3) each conv-BN is a
    sum of re-parameterizable branches (`conv_bn`).
    """

    features: int
    ratio: int = 2
    kernel_size: int = 1
    dw_size: int = 3
    stride: int = 1
    relu: bool = True
    conv: ModuleDef = Conv
    norm: ModuleDef = BatchNorm
    dfc: bool = False
    branches: int = 0
    reparameterized: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.ratio < 2:
            raise ValueError(f'GhostModule ratio must be >= 2, got {self.ratio}.')
        act = nn.relu if self.relu else (lambda y: y)
        init_features = math.ceil(self.features / self.ratio)
        layers = dict(
            branches=self.branches,
            reparameterized=self.reparameterized,
            conv=self.conv,
            norm=self.norm,
            train=train,
        )
        primary = act(
            conv_bn(x, 'primary', init_features, self.kernel_size, self.stride, 1, **layers)
        )
        cheap = act(
            conv_bn(
                primary,
                'cheap',
                init_features * (self.ratio - 1),
                self.dw_size,
                1,
                init_features,
                **layers,
            )
        )
        out = jnp.concatenate([primary, cheap], axis=-1)[..., : self.features]
        if not self.dfc:
            return out
        gate = DFCAttention(
            self.features, self.kernel_size, self.stride, conv=self.conv, norm=self.norm, name='dfc'
        )(x, out.shape[1:3], train)
        return out * gate.astype(out.dtype)


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
    depthwise conv + BN + 1x1 conv + BN. There is no activation after the sum. `dfc` puts DFC
    attention on ghost1 (v2, v3); `branches` > 0 makes ghost1, ghost2 and the stride-2
    depthwise conv re-parameterizable (v3; the shortcut and squeeze-excite stay plain).
    """

    mid_features: int
    out_features: int
    dw_kernel: int = 3
    stride: int = 1
    se_ratio: float = 0.0
    conv: ModuleDef = Conv
    norm: ModuleDef = BatchNorm
    dfc: bool = False
    branches: int = 0
    reparameterized: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        in_features = x.shape[-1]
        ghost = dict(
            conv=self.conv,
            norm=self.norm,
            branches=self.branches,
            reparameterized=self.reparameterized,
        )
        y = GhostModule(self.mid_features, relu=True, dfc=self.dfc, name='ghost1', **ghost)(
            x, train
        )
        if self.stride > 1:
            y = conv_bn(
                y,
                'dw',
                self.mid_features,
                self.dw_kernel,
                self.stride,
                self.mid_features,
                train=train,
                **ghost,
            )
        if self.se_ratio:
            y = SqueezeExcite(self.se_ratio, conv=self.conv, name='se')(y)
        y = GhostModule(self.out_features, relu=False, name='ghost2', **ghost)(y, train)

        if in_features == self.out_features and self.stride == 1:
            return y + x
        s = self.conv(
            in_features, self.dw_kernel, self.stride, groups=in_features, name='shortcut_dw'
        )(x)
        s = self.norm(use_running_average=not train, name='shortcut_dw_bn')(s)
        s = self.conv(self.out_features, 1, name='shortcut_pw')(s)
        s = self.norm(use_running_average=not train, name='shortcut_pw_bn')(s)
        return y + s
