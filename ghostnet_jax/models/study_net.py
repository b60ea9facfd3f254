"""The original Keras study's network, rebuilt from its description (`ghost_study_net`).

The study this project comes from trained a simplified "GhostNet" on CIFAR-10. What is
known of it: a 3x3 Conv2D stem with 32 filters (896 parameters) on 32x32x3; four Ghost
modules, the first 32 -> 64 channels, each a 1x1 primary conv plus a 3x3 depthwise cheap
operation, all at 32x32, reaching 512 channels, the depthwise layer at 32x32x512 having
5,120 parameters; global average pooling; Dense 512; Dense 10; "about 300,000 parameters"
by the study's own estimate.

Choices the description leaves open, and what is chosen here:

1. Widths 32 -> 64 -> 128 -> 256 -> 512: doubling, the only progression of four modules
   from 32 -> 64 to 512.
2. How a module joins its primary and cheap features. 5,120 = 3*3*512 + 512 is a
   depthwise 3x3 with bias over 512 channels, so the last cheap operation is as wide as
   the module's 512-channel output and cannot be concatenated with the primary maps
   (that would give 1,024 channels). `merge='add'` (default) therefore sums them: primary
   1x1 conv to `width` channels, cheap depthwise 3x3 on those, output primary + cheap.
   `merge='concat'` is the paper's Ghost module instead (primary to width / 2, cheap on
   those, concatenated): its last depthwise has 2,560 parameters, not 5,120. It is
   registered as `ghost_study_net_concat`.
3. Biases everywhere (Keras's default, and what 896 = 3*3*3*32 + 32 and 5,120 count).
4. No BatchNorm: none is described (Keras would list it as layers of their own).
   `ghost_study_net_bn` is the other reading: at the study's best grid cell (lr 0.01,
   batch 32) this net's ReLUs all die and that one trains (docs/experiments.md).
5. ReLU after the stem, after each primary and each cheap conv, and after Dense 512;
   Dense 10 outputs logits (Keras's softmax lives in the loss here).
6. 'same' padding, stride 1 everywhere (the maps "stay at 32x32"), no pooling before the
   global average, no dropout (`dropout_rate` adds it before the classifier).

Parameters: 453,322 with 'add', 361,002 with 'concat'. Neither is "about 300,000": Dense
512 on 512 pooled channels alone has 262,656, so that estimate cannot hold for any
reading with 512 channels before it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ghostnet_jax.models.layers import Dtype, layer_defs
from ghostnet_jax.models.registry import register_model

STUDY_WIDTHS = (64, 128, 256, 512)
STEM_FEATURES = 32
MERGES = ('add', 'concat')


class StudyGhostModule(nn.Module):
    """The study's Ghost module: 1x1 primary conv (bias, ReLU), 3x3 depthwise cheap conv on
    it (bias, ReLU), merged by 'add' (both `features` wide) or 'concat' (half each)."""

    features: int
    merge: str = 'add'
    conv: Any = None
    norm: Any = None  # BatchNorm after each conv (GhostStudyNet.batchnorm), or None

    def _bn(self, y: jax.Array, name: str, train: bool) -> jax.Array:
        return y if self.norm is None else self.norm(use_running_average=not train, name=name)(y)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        primary_features = self.features if self.merge == 'add' else self.features // 2
        primary = self.conv(primary_features, 1, use_bias=True, name='primary_conv')(x)
        primary = nn.relu(self._bn(primary, 'primary_bn', train))
        cheap = self.conv(
            primary_features, 3, groups=primary_features, use_bias=True, name='cheap_operation'
        )(primary)
        cheap = nn.relu(self._bn(cheap, 'cheap_bn', train))
        if self.merge == 'add':
            return primary + cheap
        return jnp.concatenate([primary, cheap], axis=-1)


class GhostStudyNet(nn.Module):
    """Stem conv -> four `StudyGhostModule`s at full resolution -> mean -> Dense 512 -> Dense."""

    num_classes: int = 10
    merge: str = 'add'
    widths: tuple[int, ...] = STUDY_WIDTHS
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    conv_impl: str = 'auto'
    bn_axis_name: str | None = None  # used with batchnorm=True
    # Not in the study's description (choice 4): BatchNorm after every conv, to test whether
    # the study's net had it (docs/experiments.md, "The study's grid, CPU-sized").
    batchnorm: bool = False

    def parameter_group(self, name: str) -> str:
        """stem, stage<k> for the k-th Ghost module, head for the dense layers."""
        if name.startswith('ghost_'):
            return f'stage{name.split("_")[1]}'
        return 'stem' if name.startswith('stem') else 'head'

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.merge not in MERGES:
            raise ValueError(f'merge={self.merge!r} is not one of {MERGES}.')
        conv, norm = layer_defs(self.dtype, self.param_dtype, self.conv_impl, self.bn_axis_name)
        norm = norm if self.batchnorm else None
        x = conv(STEM_FEATURES, 3, use_bias=True, name='stem')(x)
        if norm is not None:
            x = norm(use_running_average=not train, name='stem_bn')(x)
        x = nn.relu(x)
        for index, width in enumerate(self.widths):
            x = StudyGhostModule(width, self.merge, conv, norm, name=f'ghost_{index}')(x, train)
        x = jnp.mean(x, axis=(1, 2))
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.relu(nn.Dense(512, **dense, name='fc')(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, **dense, name='classifier')(x)


@register_model
def ghost_study_net(**overrides: Any) -> GhostStudyNet:
    """The original Keras study's four-Ghost-module net (choices: models/study_net.py)."""
    return GhostStudyNet(**overrides)


@register_model
def ghost_study_net_bn(**overrides: Any) -> GhostStudyNet:
    """Not the study's: `ghost_study_net` with BatchNorm after every conv (choice 4's
    alternative), to test whether the study's net had it."""
    return GhostStudyNet(**{'batchnorm': True, **overrides})


@register_model
def ghost_study_net_concat(**overrides: Any) -> GhostStudyNet:
    """Not the study's: `ghost_study_net` with the paper's concatenating Ghost modules
    (choice 2's alternative; 361,002 parameters), to test what the reading costs."""
    return GhostStudyNet(**{'merge': 'concat', **overrides})
