"""GhostNet (Han et al., CVPR 2020) and its successors GhostNetV2 (DFC attention) and
GhostNetV3 (re-parameterizable branches), faithful to the official PyTorch code and timm.

All three share the table below, the stem and the head; width scaling, the CIFAR strides and
the version's block options (ghost_blocks.py) are the only other decisions.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ghostnet_jax.models.ghost_blocks import ConvBnAct, GhostBottleneck
from ghostnet_jax.models.layers import Dtype, layer_defs, make_divisible, output_size
from ghostnet_jax.models.registry import ModelInputError, register_model


class BlockSpec(NamedTuple):
    kernel: int  # depthwise kernel of the stride-2 conv and of the shortcut
    hidden: int  # width of ghost1's output ("expansion size")
    out: int  # block output width
    se_ratio: float  # 0 = no squeeze-excite
    stride: int


# One inner tuple per stage (official `cfgs`); 16 bottlenecks in all.
GHOSTNET_STAGES: tuple[tuple[BlockSpec, ...], ...] = tuple(
    tuple(BlockSpec(*row) for row in stage)
    for stage in (
        ((3, 16, 16, 0, 1),),
        ((3, 48, 24, 0, 2),),
        ((3, 72, 24, 0, 1),),
        ((5, 72, 40, 0.25, 2),),
        ((5, 120, 40, 0.25, 1),),
        ((3, 240, 80, 0, 2),),
        (
            (3, 200, 80, 0, 1),
            (3, 184, 80, 0, 1),
            (3, 184, 80, 0, 1),
            (3, 480, 112, 0.25, 1),
            (3, 672, 112, 0.25, 1),
        ),
        ((5, 672, 160, 0.25, 2),),
        ((5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)),
    )
)
STEM_FEATURES = 16
HEAD_FEATURES = 1280
VERSIONS = ('v1', 'v2', 'v3')
# v2 and v3 put DFC attention on ghost1 of every bottleneck but the first two (flat index).
FIRST_DFC_BLOCK = 2


class GhostNet(nn.Module):
    """GhostNet classifier on NHWC images.

    `stem_stride` and `stride_one_blocks` (flat bottleneck indices forced to stride 1) adapt
    the ImageNet network to 32x32 inputs without touching the table. `version` 'v2' adds
    DFC attention, 'v3' DFC attention and `num_branches` re-parameterizable conv-BN
    branches per conv (timm and the official code use 3); `reparameterized` is v3's folded
    inference form (`ghostnet_jax.models.reparameterize` makes its variables).
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
    version: str = 'v1'
    num_branches: int = 3
    reparameterized: bool = False

    def _block_strides(self) -> list[tuple[BlockSpec, int]]:
        """(spec, stride actually used) of every bottleneck, in order."""
        specs = [spec for stage in self.stages for spec in stage]
        return [
            (spec, 1 if i in self.stride_one_blocks else spec.stride)
            for i, spec in enumerate(specs)
        ]

    def _smallest_dfc_input(self, size: int) -> int | None:
        """The side of the smallest map a DFC attention sees for a size x size image (None
        without DFC)."""
        if self.version == 'v1':
            return None
        size, sizes = output_size(size, 3, self.stem_stride), []
        for index, (spec, stride) in enumerate(self._block_strides()):
            if index >= FIRST_DFC_BLOCK:
                sizes.append(size)
            size = output_size(size, spec.kernel, stride)
        return min(sizes, default=None)

    def min_input_size(self) -> int:
        """The smallest square input this network accepts: DFC attention pools its input by
        2, so every map it sees must be at least 2x2 (33x33 images with ImageNet strides)."""
        size = 1
        while (smallest := self._smallest_dfc_input(size)) is not None and smallest < 2:
            size += 1
        return size

    def _check(self, x: jax.Array) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f'version={self.version!r} is not one of {VERSIONS}.')
        if self.version == 'v3' and self.num_branches < 1:
            raise ValueError(f'num_branches must be >= 1 for GhostNetV3, got {self.num_branches}.')
        if self.reparameterized and self.version != 'v3':
            raise ValueError(
                'reparameterized=True is the folded form of GhostNetV3 only '
                f'(version={self.version!r} has no branches to fold).'
            )
        smallest = self._smallest_dfc_input(min(x.shape[1:3]))
        if smallest is not None and smallest < 2:
            raise ModelInputError(
                f'{x.shape[1]}x{x.shape[2]} images are too small for GhostNet{self.version.upper()}'
                f' with these strides: its DFC attention would average-pool a {smallest}x'
                f'{smallest} map by 2. It needs at least {self.min_input_size()}x'
                f'{self.min_input_size()}; for 32x32 images use a CIFAR variant (e.g. '
                f'ghostnet{self.version}_cifar_100).'
            )

    def parameter_group(self, name: str) -> str:
        """The stage a top-level submodule belongs to (per-stage gradient norms): the stem,
        stage<k> for the bottlenecks of table row group k, the head."""
        if name.startswith('blocks_'):
            return f'stage{name.split("_")[1]}'
        return 'stem' if name in ('conv_stem', 'bn1') else 'head'

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        self._check(x)
        conv, norm = layer_defs(self.dtype, self.param_dtype, self.conv_impl, self.bn_axis_name)
        x = conv(make_divisible(STEM_FEATURES * self.width), 3, self.stem_stride, name='conv_stem')(
            x
        )
        x = nn.relu(norm(use_running_average=not train, name='bn1')(x))

        blocks = enumerate(self._block_strides())
        for stage_index, stage in enumerate(self.stages):
            for layer_index in range(len(stage)):
                block_index, (spec, stride) = next(blocks)
                x = GhostBottleneck(
                    make_divisible(spec.hidden * self.width),
                    make_divisible(spec.out * self.width),
                    spec.kernel,
                    stride,
                    spec.se_ratio,
                    conv=conv,
                    norm=norm,
                    dfc=self.version != 'v1' and block_index >= FIRST_DFC_BLOCK,
                    branches=self.num_branches if self.version == 'v3' else 0,
                    reparameterized=self.reparameterized,
                    name=f'blocks_{stage_index}_{layer_index}',
                )(x, train)
        last_hidden = self.stages[-1][-1].hidden
        x = ConvBnAct(
            make_divisible(last_hidden * self.width),
            conv=conv,
            norm=norm,
            name=f'blocks_{len(self.stages)}_0',
        )(x, train)

        x = jnp.mean(x, axis=(1, 2), keepdims=True)
        # conv_head is a 1x1 conv with bias and no BN, applied after pooling (official order).
        x = nn.relu(conv(HEAD_FEATURES, use_bias=True, name='conv_head')(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(
            self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name='classifier'
        )(x)


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
TINY_STAGES = tuple(
    tuple(BlockSpec(*row) for row in stage)
    for stage in (((3, 16, 16, 0, 1),), ((3, 48, 24, 0, 2),), ((5, 72, 40, 0.25, 2),))
)


@register_model
def ghostnet_cifar_tiny(**overrides: Any) -> GhostNet:
    """Not from the paper: 3 bottlenecks at 0.25x for tests and smoke runs (CIFAR strides)."""
    return GhostNet(
        **{
            'width': 0.25,
            'stages': TINY_STAGES,
            **CIFAR_OVERRIDES,
            'stride_one_blocks': (),
            **overrides,
        }
    )


# GhostNetV2 and V3: timm's names and widths (ghostnetv2_100/130/160, ghostnetv3_050/100/
# 130/160), each also with the CIFAR strides and 10 classes as ghostnet{v}_cifar_{width}.
# ghostnetv2_050 is not in timm (its GhostNet with width=0.5, version='v2'): with it, all
# three versions exist at the 0.5x width that fits a CPU hour on CIFAR-10.
def _register_family(version: str, widths: dict[str, float]) -> None:
    for suffix, width in widths.items():
        for cifar in (False, True):
            name = f'ghostnet{version}_{"cifar_" if cifar else ""}{suffix}'
            base = dict(CIFAR_OVERRIDES) if cifar else {}
            what = '32x32 inputs, 10 classes' if cifar else 'ImageNet strides (output stride 32)'

            def build(_width=width, _base=base, **overrides: Any) -> GhostNet:
                return GhostNet(**{'width': _width, 'version': version, **_base, **overrides})

            build.__name__ = build.__qualname__ = name
            build.__doc__ = f'GhostNet{version.upper()} {width}x, {what}.'
            register_model(build)


_register_family('v2', {'050': 0.5, '100': 1.0, '130': 1.3, '160': 1.6})
_register_family('v3', {'050': 0.5, '100': 1.0, '130': 1.3, '160': 1.6})


@register_model
def ghostnetv2_cifar_tiny(**overrides: Any) -> GhostNet:
    """Not from the paper: ghostnet_cifar_tiny with v2's DFC attention (on its third block)."""
    return ghostnet_cifar_tiny(**{'version': 'v2', **overrides})


@register_model
def ghostnetv3_cifar_tiny(**overrides: Any) -> GhostNet:
    """Not from the paper: ghostnet_cifar_tiny as GhostNetV3 (DFC on block 3), for tests and
    smoke runs: one kxk branch per conv beside the 1x1 scale and identity branches (every
    branch kind, at half the compile time of timm's three)."""
    return ghostnet_cifar_tiny(**{'version': 'v3', 'num_branches': 1, **overrides})
