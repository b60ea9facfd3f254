"""MobileNetV3-Large and -Small (Howard et al., ICCV 2019) as timm builds them: the reference
GhostNet is compared with at inference (`python -m ghostnet_jax.benchmark --inference`).

Faithful to timm's `mobilenetv3_large_100` / `mobilenetv3_small_100` (its efficientnet
builder): module names mirror timm's state_dict, so `from_torch_state_dict` reads timm's
weights, and tests/test_convert.py checks the logits against timm's. The blocks:

    ds  depthwise kxk (stride) -> BN -> act [-> SE] -> 1x1 -> BN; residual when it keeps shape
    ir  1x1 expand -> BN -> act -> depthwise kxk (stride) -> BN -> act [-> SE] -> 1x1 -> BN;
        residual when it keeps shape
    cn  1x1 -> BN -> act

with the expansion width make_divisible(in * ratio, 8), squeeze-excite on the expanded width
(reduction make_divisible(c / 4, 8), ReLU inside, hard-sigmoid gate), ReLU in the early
stages and hard-swish after them. The head pools first, then a 1x1 conv with bias to 1280
(Large) / 1024 (Small) features, hard-swish, dropout and the classifier.

The `_cifar_` variants are not from the paper: the same networks with the stem and the first
stride-2 block at stride 1 (output stride 8, a 4x4 final map at 32x32), the change the
CIFAR GhostNets make, so that both are compared at 32x32 on equal terms.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ghostnet_jax.models.ghost_blocks import SqueezeExcite
from ghostnet_jax.models.layers import Dtype, layer_defs, make_divisible
from ghostnet_jax.models.registry import register_model

STEM_FEATURES = 16
SE_RATIO, SE_DIVISOR, WIDTH_DIVISOR = 0.25, 8, 8


class MBlock(NamedTuple):
    kind: str  # 'ds', 'ir' or 'cn'
    kernel: int
    stride: int
    expansion: float  # 'ir' only
    out: int
    se: bool
    act: str  # 'relu' or 'hard_swish'


def _stage(kind, kernel, stride, expansion, out, se, act, repeat=1) -> tuple[MBlock, ...]:
    """timm's rN: N blocks, the first with the stride."""
    return tuple(
        MBlock(kind, kernel, stride if i == 0 else 1, expansion, out, se, act)
        for i in range(repeat)
    )


R, H = 'relu', 'hard_swish'
LARGE_STAGES = (
    _stage('ds', 3, 1, 1, 16, False, R),
    _stage('ir', 3, 2, 4, 24, False, R) + _stage('ir', 3, 1, 3, 24, False, R),
    _stage('ir', 5, 2, 3, 40, True, R, repeat=3),
    _stage('ir', 3, 2, 6, 80, False, H)
    + _stage('ir', 3, 1, 2.5, 80, False, H)
    + _stage('ir', 3, 1, 2.3, 80, False, H, repeat=2),
    _stage('ir', 3, 1, 6, 112, True, H, repeat=2),
    _stage('ir', 5, 2, 6, 160, True, H, repeat=3),
    _stage('cn', 1, 1, 1, 960, False, H),
)
SMALL_STAGES = (
    _stage('ds', 3, 2, 1, 16, True, R),
    _stage('ir', 3, 2, 4.5, 24, False, R) + _stage('ir', 3, 1, 3.67, 24, False, R),
    _stage('ir', 5, 2, 4, 40, True, H) + _stage('ir', 5, 1, 6, 40, True, H, repeat=2),
    _stage('ir', 5, 1, 3, 48, True, H, repeat=2),
    _stage('ir', 5, 2, 6, 96, True, H, repeat=3),
    _stage('cn', 1, 1, 1, 576, False, H),
)


def _act(name: str):
    # jax.nn's functions: exporters that know them emit one op (ONNX HardSwish).
    return jax.nn.relu if name == R else jax.nn.hard_swish


class MobileNetV3Block(nn.Module):
    """One ds / ir / cn block (see the module docstring), timm's layer names."""

    spec: MBlock
    in_features: int
    out_features: int
    conv: Any
    norm: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        s, act = self.spec, _act(self.spec.act)
        conv, norm = self.conv, self.norm

        def bn(name: str, y: jax.Array) -> jax.Array:
            return norm(use_running_average=not train, name=name)(y)

        if s.kind == 'cn':
            return act(bn('bn1', conv(self.out_features, 1, name='conv')(x)))
        shortcut = x
        if s.kind == 'ds':
            y = conv(self.in_features, s.kernel, s.stride, groups=self.in_features, name='conv_dw')(
                x
            )
            y = act(bn('bn1', y))
            if s.se:
                y = SqueezeExcite(SE_RATIO, SE_DIVISOR, conv=conv, name='se')(y)
            y = bn('bn2', conv(self.out_features, 1, name='conv_pw')(y))
        else:
            mid = make_divisible(self.in_features * s.expansion, WIDTH_DIVISOR)
            y = act(bn('bn1', conv(mid, 1, name='conv_pw')(x)))
            y = act(bn('bn2', conv(mid, s.kernel, s.stride, groups=mid, name='conv_dw')(y)))
            if s.se:
                y = SqueezeExcite(SE_RATIO, SE_DIVISOR, conv=conv, name='se')(y)
            y = bn('bn3', conv(self.out_features, 1, name='conv_pwl')(y))
        if s.stride == 1 and self.in_features == self.out_features:
            y = y + shortcut
        return y


class MobileNetV3(nn.Module):
    """MobileNetV3 as timm builds it (module docstring); `stages`: LARGE_STAGES or
    SMALL_STAGES; `stem_stride` and `stride_one_blocks` (flat block indices) give the
    CIFAR variants."""

    stages: tuple[tuple[MBlock, ...], ...] = LARGE_STAGES
    head_features: int = 1280
    num_classes: int = 1000
    width: float = 1.0
    dropout_rate: float = 0.2
    stem_stride: int = 2
    stride_one_blocks: tuple[int, ...] = ()
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    conv_impl: str = 'auto'
    bn_axis_name: str | None = None

    def min_input_size(self) -> int:
        return 1

    def parameter_group(self, name: str) -> str:
        """The stage a top-level submodule belongs to (per-stage gradient norms)."""
        if name.startswith('blocks_'):
            return f'stage{name.split("_")[1]}'
        return 'stem' if name in ('conv_stem', 'bn1') else 'head'

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv, norm = layer_defs(self.dtype, self.param_dtype, self.conv_impl, self.bn_axis_name)
        features = make_divisible(STEM_FEATURES * self.width, WIDTH_DIVISOR)
        x = conv(features, 3, self.stem_stride, name='conv_stem')(x)
        x = jax.nn.hard_swish(norm(use_running_average=not train, name='bn1')(x))
        index = 0
        for stage_index, stage in enumerate(self.stages):
            for layer_index, spec in enumerate(stage):
                if index in self.stride_one_blocks:
                    spec = spec._replace(stride=1)
                out = make_divisible(spec.out * self.width, WIDTH_DIVISOR)
                x = MobileNetV3Block(
                    spec, features, out, conv, norm, name=f'blocks_{stage_index}_{layer_index}'
                )(x, train)
                features, index = out, index + 1
        x = jnp.mean(x, axis=(1, 2), keepdims=True)
        x = jax.nn.hard_swish(conv(self.head_features, use_bias=True, name='conv_head')(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(
            self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name='classifier'
        )(x)


@register_model
def mobilenetv3_large_100(**overrides: Any) -> MobileNetV3:
    """MobileNetV3-Large 1.0 (timm's mobilenetv3_large_100), ImageNet strides."""
    return MobileNetV3(**{'stages': LARGE_STAGES, 'head_features': 1280, **overrides})


@register_model
def mobilenetv3_small_100(**overrides: Any) -> MobileNetV3:
    """MobileNetV3-Small 1.0 (timm's mobilenetv3_small_100), ImageNet strides."""
    return MobileNetV3(**{'stages': SMALL_STAGES, 'head_features': 1024, **overrides})


@register_model
def mobilenetv3_large_cifar_100(**overrides: Any) -> MobileNetV3:
    """Not from the paper: MobileNetV3-Large 1.0 at output stride 8 for 32x32, 10 classes."""
    return mobilenetv3_large_100(
        **{'num_classes': 10, 'stem_stride': 1, 'stride_one_blocks': (1,), **overrides}
    )


@register_model
def mobilenetv3_small_cifar_100(**overrides: Any) -> MobileNetV3:
    """Not from the paper: MobileNetV3-Small 1.0 at output stride 8 for 32x32, 10 classes."""
    return mobilenetv3_small_100(
        **{'num_classes': 10, 'stem_stride': 1, 'stride_one_blocks': (0,), **overrides}
    )
