"""The building blocks every network here is made of: one convolution layer and one BatchNorm.

All convolutions go through `Conv`, so parameter layout, padding and the choice of kernel
formulation live in one place. XLA's native CPU convolutions are very slow for this network
(measured on 2-core x86 CPUs: a 3x3 depthwise forward+backward ~20x slower than 9 shifted
multiply-adds, a 1x1 ~15x slower than an einsum), so on CPU `Conv` computes the same function
with slices + multiply-adds / one matmul; on GPU/TPU it calls `lax.conv_general_dilated`.
Both read the same `kernel` (HWIO, PyTorch's grouped-channel order), so checkpoints move freely.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Dtype = Any
ModuleDef = Any

CONV_IMPLS = ('auto', 'native', 'shifted')

# PyTorch's BatchNorm2d defaults: momentum 0.1 there is 0.9 here (weight of the old value).
BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)

# He-normal over fan-out, the usual choice for ReLU conv nets trained from scratch.
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def make_divisible(value: float, divisor: int = 4, min_value: int | None = None) -> int:
    """Rounds a channel count to a multiple of `divisor`, the official GhostNet rule.

    Rounds to nearest, then adds one `divisor` if that lost more than 10% of `value`.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def hard_sigmoid(x: jax.Array) -> jax.Array:
    """relu6(x + 3) / 6, the gate of GhostNet's squeeze-excite (not a logistic sigmoid)."""
    # jax.nn's own function (the same arithmetic): exporters that know it emit one op
    # (ONNX HardSigmoid through jax2onnx) instead of add, clip and divide.
    return jax.nn.hard_sigmoid(x)


def output_size(size: int, kernel: int, stride: int) -> int:
    """Spatial output size of a conv with symmetric padding kernel // 2 (PyTorch's rule)."""
    pad = kernel // 2
    return (size + 2 * pad - kernel) // stride + 1


def conv_native(x: jax.Array, kernel: jax.Array, stride: int, groups: int) -> jax.Array:
    """Reference formulation: XLA's convolution with explicit symmetric padding.

    Explicit `k // 2` padding, never 'SAME': at stride 2 on even inputs 'SAME' pads
    (0, 1) where PyTorch pads (1, 1), which shifts every window by one pixel.
    """
    kh, kw = kernel.shape[:2]
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=((kh // 2, kh // 2), (kw // 2, kw // 2)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        feature_group_count=groups,
    )


def _pad_same(x: jax.Array, kh: int, kw: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))


def _windows(xp: jax.Array, kh: int, kw: int, stride: int, ho: int, wo: int):
    """Yields ((i, j), the window of the padded input `xp` that kernel tap (i, j) multiplies
    to make an (N, ho, wo, C) output)."""
    n, _, _, c = xp.shape
    for i in range(kh):
        for j in range(kw):
            yield (
                (i, j),
                lax.slice(
                    xp,
                    (0, i, j, 0),
                    (n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                    (1, stride, stride, 1),
                ),
            )


def _shifted_windows(x: jax.Array, kh: int, kw: int, stride: int):
    """Yields ((i, j), the input window that kernel tap (i, j) multiplies), each (N, Ho, Wo, C)."""
    h, w = x.shape[1:3]
    yield from _windows(
        _pad_same(x, kh, kw), kh, kw, stride, output_size(h, kh, stride), output_size(w, kw, stride)
    )


def _multiply_add_taps(windows, kernel: jax.Array) -> jax.Array:
    out = None
    for (i, j), win in windows:
        term = win * kernel[i, j, 0]
        out = term if out is None else out + term
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_shifted(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Depthwise conv (multiplier 1, kernel (kh, kw, 1, C)) as a sum of per-tap products.

    Its gradient is written by hand. Autodiff transposes each strided window slice into its
    own zero-padded copy of the input (25 full-size arrays for a 5x5 stride-2 conv, which
    XLA materializes when the gradient has two consumers, as behind a Ghost module's concat).
    Here the input gradient is the output gradient, dilated by the stride and padded once,
    correlated with the flipped kernel: slices of one array, like the forward. Measured on
    GhostNet-CIFAR 1.0x (2-core AVX-512, batch 128, in one process): train step 1.16-1.29x
    faster, compile ~7 s shorter.
    """
    return _multiply_add_taps(_shifted_windows(x, kernel.shape[0], kernel.shape[1], stride), kernel)


def _depthwise_forward(x, kernel, stride):
    return depthwise_shifted(x, kernel, stride), (x, kernel)


def _depthwise_backward(stride, residuals, g):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    n, h, w, c = x.shape
    ho, wo = g.shape[1:3]
    ph, pw = kh // 2, kw // 2
    kernel_grad = jnp.stack(
        [
            jnp.sum(win * g, axis=(0, 1, 2))
            for _, win in _windows(_pad_same(x, kh, kw), kh, kw, stride, ho, wo)
        ]
    ).reshape(kernel.shape)
    # Padded-input row a receives sum_i g_dilated[a - i] * k[i]. With g_dilated padded by
    # kh - 1 in front (gp), that is sum_i gp[a + kh - 1 - i] * k[i]; only rows a in
    # [ph, ph + h) are input rows. The high padding makes gp exactly long enough.
    dilated_h, dilated_w = stride * (ho - 1) + 1, stride * (wo - 1) + 1
    gp = lax.pad(
        g,
        jnp.zeros((), g.dtype),
        (
            (0, 0, 0),
            (kh - 1, ph + h - dilated_h, stride - 1),
            (kw - 1, pw + w - dilated_w, stride - 1),
            (0, 0, 0),
        ),
    )
    taps = (
        (
            (i, j),
            lax.slice(
                gp,
                (0, ph + kh - 1 - i, pw + kw - 1 - j, 0),
                (n, ph + kh - 1 - i + h, pw + kw - 1 - j + w, c),
            ),
        )
        for i in range(kh)
        for j in range(kw)
    )
    return _multiply_add_taps(taps, kernel), kernel_grad


depthwise_shifted.defvjp(_depthwise_forward, _depthwise_backward)


def conv_shifted(x: jax.Array, kernel: jax.Array, stride: int, groups: int) -> jax.Array:
    """The same convolution as `conv_native`, written as slices, multiply-adds and matmuls.

    Dense convs become one matmul over the concatenated windows (im2col); depthwise convs
    (with any channel multiplier) become a sum of per-tap elementwise products
    (`depthwise_shifted`). Other grouped convs, which no network here uses, fall back to the
    native op.
    """
    kh, kw, in_per_group, out_features = kernel.shape
    in_features = x.shape[-1]
    if groups == 1:
        windows = [win for _, win in _shifted_windows(x, kh, kw, stride)]
        patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
        # (i, j, c) order of the concatenation matches kernel.reshape's row-major order.
        return jnp.einsum(
            'nhwk,kd->nhwd', patches, kernel.reshape(kh * kw * in_per_group, out_features)
        )
    if groups == in_features and in_per_group == 1:
        multiplier = out_features // in_features
        if multiplier > 1:
            # Output channel o of a grouped conv reads input channel o // multiplier.
            x = jnp.repeat(x, multiplier, axis=-1)
        return depthwise_shifted(x, kernel, stride)
    return conv_native(x, kernel, stride, groups)


def resolve_conv_impl(impl: str) -> str:
    if impl not in CONV_IMPLS:
        raise ValueError(f'conv_impl={impl!r} is not one of {CONV_IMPLS}.')
    if impl == 'auto':
        return 'shifted' if jax.default_backend() == 'cpu' else 'native'
    return impl


def kernel_hw(kernel_size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a square (int) or rectangular ((kh, kw)) kernel size."""
    if isinstance(kernel_size, int):
        return kernel_size, kernel_size
    kh, kw = kernel_size
    return int(kh), int(kw)


class Conv(nn.Module):
    """2-D convolution, NHWC, symmetric `k // 2` padding, PyTorch-compatible grouping.

    `kernel_size` is an int (square) or (kh, kw): GhostNetV2's DFC attention uses 1x5 and
    5x1 depthwise kernels, padded (0, 2) and (2, 0) as PyTorch pads them.
    """

    features: int
    kernel_size: int | tuple[int, int] = 1
    stride: int = 1
    groups: int = 1
    use_bias: bool = False
    impl: str = 'auto'
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable = conv_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_features = x.shape[-1]
        if in_features % self.groups or self.features % self.groups:
            raise ValueError(
                f'{self.groups} groups must divide both {in_features} input and '
                f'{self.features} output channels.'
            )
        kernel = self.param(
            'kernel',
            self.kernel_init,
            (*kernel_hw(self.kernel_size), in_features // self.groups, self.features),
            self.param_dtype,
        )
        dtype = self.dtype or x.dtype
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        conv = conv_shifted if resolve_conv_impl(self.impl) == 'shifted' else conv_native
        y = conv(x, kernel, self.stride, self.groups)
        if self.use_bias:
            bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
            y = y + bias.astype(dtype)
        return y


def layer_defs(
    dtype: Dtype, param_dtype: Dtype, conv_impl: str, bn_axis_name: str | None
) -> tuple[ModuleDef, ModuleDef]:
    """The (conv, norm) constructors a network passes down to its blocks."""
    conv = functools.partial(Conv, impl=conv_impl, dtype=dtype, param_dtype=param_dtype)
    norm = functools.partial(
        BatchNorm, dtype=dtype, param_dtype=param_dtype, axis_name=bn_axis_name
    )
    return conv, norm
