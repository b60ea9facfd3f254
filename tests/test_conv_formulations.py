"""The CPU-fast conv formulation must be the same function as XLA's convolution.

Checked for every (kernel, stride, grouping) that a registered model actually uses, on odd
and even input sizes, for outputs and for gradients w.r.t. both input and kernel.
"""

import functools
import re

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ghostnet_jax.models import Conv, conv_shifted, create_model, list_models
from ghostnet_jax.models.layers import kernel_hw


def _family_representatives() -> list[str]:
    """One registered name per family: the widths of a family (ghostnet_050/100/130,
    ghostnetv3_cifar_050/...) differ in channel counts only, never in the kinds of conv."""
    seen = {}
    for name in list_models():
        seen.setdefault(re.sub(r'_(\d{3}|tiny)$', '', name), name)
    return sorted(seen.values())


@functools.cache
def _used_conv_configs():
    """((kh, kw), stride, kind, multiplier) of every Conv call in every registered family."""
    seen = set()

    def record(next_fun, args, kwargs, context):
        m = context.module
        if isinstance(m, Conv) and context.method_name == '__call__':
            cin = args[0].shape[-1]
            if m.groups == 1:
                seen.add((kernel_hw(m.kernel_size), m.stride, 'dense', 1))
            else:
                assert m.groups == cin, 'only dense and depthwise convs are expected'
                seen.add((kernel_hw(m.kernel_size), m.stride, 'depthwise', m.features // cin))
        return next_fun(*args, **kwargs)

    for name in _family_representatives():
        model = create_model(name)
        size = max(32, getattr(model, 'min_input_size', lambda: 32)())
        x = jnp.zeros((1, size, size, 3))
        # init runs the forward pass too: one trace per model.
        with nn.intercept_methods(record):
            jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    return frozenset(seen)


# Ghost modules with ratio s > 2 (paper Table 3 sweeps) use depthwise multipliers s - 1.
CONFIGS = sorted(_used_conv_configs() | {((3, 3), 1, 'depthwise', 2), ((5, 5), 1, 'depthwise', 3)})


def test_the_models_use_the_expected_conv_kinds():
    kinds = {(k, s, kind) for k, s, kind, _ in _used_conv_configs()}
    # stems and VGG/ResNet 3x3 (s1, s2), 1x1 pointwise, cheap ops and shortcuts (depthwise
    # 3x3 s1), stride-2 depthwise 3x3/5x5; GhostNetV2/V3's DFC attention (depthwise 1x5,
    # 5x1) and V3's 1x1 depthwise scale branches (s1 beside the cheap op, s2 beside the
    # stride-2 depthwise conv); MobileNetV3's 5x5 depthwise at stride 1.
    assert kinds == {
        ((3, 3), 1, 'dense'),
        ((3, 3), 2, 'dense'),
        ((1, 1), 1, 'dense'),
        ((3, 3), 1, 'depthwise'),
        ((3, 3), 2, 'depthwise'),
        ((5, 5), 2, 'depthwise'),
        ((5, 5), 1, 'depthwise'),
        ((1, 5), 1, 'depthwise'),
        ((5, 1), 1, 'depthwise'),
        ((1, 1), 1, 'depthwise'),
        ((1, 1), 2, 'depthwise'),
    }


def _reference(x, kernel, stride, groups):
    kh, kw = kernel.shape[:2]
    return lax.conv_general_dilated(
        x,
        kernel,
        (stride, stride),
        [(kh // 2, kh // 2), (kw // 2, kw // 2)],
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        feature_group_count=groups,
        precision=lax.Precision.HIGHEST,
    )


# Odd and even sizes where they differ: a stride-2 conv's output size and last window
# depend on the parity; a stride-1 conv with an odd kernel pads symmetrically either way.
SIZED_CONFIGS = [
    (config, size) for config in CONFIGS for size in ((7, 8) if config[1] > 1 else (7,))
]


@pytest.mark.parametrize(
    'config, size',
    SIZED_CONFIGS,
    ids=lambda c: f'{c[0][0]}x{c[0][1]}-s{c[1]}-{c[2]}-m{c[3]}' if isinstance(c, tuple) else str(c),
)
def test_shifted_conv_matches_xla_conv(config, size):
    (kh, kw), stride, kind, multiplier = config
    cin = 6
    groups, cout = (1, 5) if kind == 'dense' else (cin, cin * multiplier)
    kx, kk, kg = jax.random.split(jax.random.key(kh * 1000 + kw * 100 + stride * 10 + size), 3)
    x = jax.random.normal(kx, (2, size, size, cin))
    kernel = jax.random.normal(kk, (kh, kw, cin // groups, cout))
    cotangent = jax.random.normal(kg, _reference(x, kernel, stride, groups).shape)

    def loss(fn):
        return lambda x, w: jnp.sum(fn(x, w, stride, groups) * cotangent)

    with jax.default_matmul_precision('highest'):
        np.testing.assert_allclose(
            conv_shifted(x, kernel, stride, groups),
            _reference(x, kernel, stride, groups),
            rtol=1e-5,
            atol=1e-5,
        )
        got = jax.grad(loss(conv_shifted), argnums=(0, 1))(x, kernel)
        want = jax.grad(loss(_reference), argnums=(0, 1))(x, kernel)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_padding_is_symmetric_like_pytorch_not_same():
    # A 3x3 stride-2 conv on an 8x8 input: PyTorch pads (1, 1), so output pixel (0, 0) sees
    # input rows/cols -1..1 and its center tap is input (0, 0). 'SAME' would center on (1, 1).
    x = jnp.arange(64.0).reshape(1, 8, 8, 1)
    kernel = jnp.zeros((3, 3, 1, 1)).at[1, 1, 0, 0].set(1.0)  # picks the center pixel
    for impl in ('native', 'shifted'):
        y = Conv(1, 3, 2, impl=impl).apply({'params': {'kernel': kernel}}, x)
        np.testing.assert_array_equal(y[0, :, :, 0], x[0, ::2, ::2, 0])


def _count_primitives(jaxpr, name: str) -> int:
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == name
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            count += _count_primitives(sub, name)
    return count


@pytest.mark.parametrize('k, stride', [(3, 1), (5, 2)])
def test_depthwise_gradient_pads_once_not_once_per_tap(k, stride):
    # Autodiff of the window slices makes one zero-padded input-sized array per tap (25 for a
    # 5x5 kernel), which XLA materializes inside the network; the hand-written gradient pads
    # the output gradient once (and the input once, for the kernel gradient).
    x = jnp.ones((2, 8, 8, 4))
    kernel = jnp.ones((k, k, 1, 4))
    grad = jax.grad(lambda x, w: jnp.sum(conv_shifted(x, w, stride, 4) ** 2), argnums=(0, 1))
    jaxpr = jax.make_jaxpr(grad)(x, kernel).jaxpr
    assert _count_primitives(jaxpr, 'pad') <= 3
