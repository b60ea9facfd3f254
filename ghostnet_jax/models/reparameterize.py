"""GhostNetV3's re-parameterization: its training-time branches folded into single convs.

A v3 conv is trained as a sum of branches (ghost_blocks.conv_bn): several kxk conv-BN, a 1x1
conv-BN and, where shapes allow, a BN of the input. In eval mode each branch is linear, so
their sum is one kxk conv with bias:

- BN into conv: BN(conv(x, K)) = conv(x, K * s) + (beta - mean * s), s = gamma / sqrt(var + eps),
  s scaling each output channel (the kernel's last axis here, HWIO).
- 1x1 to kxk: a 1x1 stride-s conv without padding reads the centre tap of a kxk stride-s conv
  padded k // 2, so its kernel goes to the centre of a zero kxk kernel.
- identity as a conv: output channel c copies input channel c, a kxk kernel that is 1 at
  the centre for (c mod in-channels-per-group, c) and 0 elsewhere, then BN-folded as above.
- sum: convolution is linear in the kernel, so kernels and biases of all branches add.

The folded network (`reparameterized=True`, the layer names of timm's deploy form) computes
the same eval-mode function with fewer parameters and MACs; `ghostnet_jax.load` folds, so
predict and every export use it. Training always uses the branches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import numpy as np

from ghostnet_jax.models.ghost_blocks import REP_CONVS
from ghostnet_jax.models.layers import BatchNorm

BN_EPSILON = BatchNorm.keywords['epsilon']


def fold_batchnorm(
    kernel: np.ndarray | float,
    scale: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float = BN_EPSILON,
) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of the conv that equals `kernel`'s conv followed by an eval-mode BN."""
    s = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    return np.asarray(kernel, np.float64) * s, np.asarray(bias, np.float64) - mean * s


def identity_kernel(kh: int, kw: int, in_per_group: int, channels: int) -> np.ndarray:
    """The HWIO kernel of a conv (groups = channels / in_per_group) that copies its input."""
    kernel = np.zeros((kh, kw, in_per_group, channels), np.float64)
    kernel[kh // 2, kw // 2, np.arange(channels) % in_per_group, np.arange(channels)] = 1.0
    return kernel


def _fold_branches(params: dict, stats: dict, prefix: str) -> dict[str, np.ndarray]:
    """Pops `prefix`'s branches out of `params`/`stats` and returns the folded conv's params."""
    convs = []
    while f'{prefix}_rpr_conv_{len(convs)}' in params:
        convs.append(f'{prefix}_rpr_conv_{len(convs)}')
    kh, kw, in_per_group, channels = np.shape(params[convs[0]]['conv']['kernel'])
    dtype = np.asarray(params[convs[0]]['conv']['kernel']).dtype
    kernel, bias = np.zeros((kh, kw, in_per_group, channels)), np.zeros(channels)

    def add(name: str, branch_kernel: np.ndarray, bn_params: Mapping, bn_stats: Mapping) -> None:
        nonlocal kernel, bias
        k, b = fold_batchnorm(
            branch_kernel, bn_params['scale'], bn_params['bias'], bn_stats['mean'], bn_stats['var']
        )
        kernel, bias = kernel + k, bias + b
        params.pop(name)
        stats.pop(name)

    for name in convs:
        add(name, params[name]['conv']['kernel'], params[name]['bn1'], stats[name]['bn1'])
    if (scale := f'{prefix}_rpr_scale') in params:
        one = np.asarray(params[scale]['conv']['kernel'], np.float64)
        padded = np.zeros((kh, kw, in_per_group, channels))
        padded[kh // 2, kw // 2] = one[0, 0]
        add(scale, padded, params[scale]['bn1'], stats[scale]['bn1'])
    if (skip := f'{prefix}_rpr_skip') in params:
        add(skip, identity_kernel(kh, kw, in_per_group, channels), params[skip], stats[skip])
    return {'kernel': kernel.astype(dtype), 'bias': bias.astype(dtype)}


def _fold_tree(params: Mapping, stats: Mapping) -> tuple[dict, dict]:
    params, stats = dict(params), dict(stats)
    for prefix, (conv_name, _) in REP_CONVS.items():
        if f'{prefix}_rpr_conv_0' in params:
            params[conv_name] = _fold_branches(params, stats, prefix)
    for name, child in list(params.items()):
        if isinstance(child, Mapping) and name in stats:
            params[name], stats[name] = _fold_tree(child, stats[name])
    return params, stats


def fold_branches(variables: Mapping[str, Any]) -> dict[str, Any]:
    """{'params', 'batch_stats'} with every re-parameterizable conv of the tree (any module
    made of ghost_blocks.conv_bn, at any depth) folded into its single conv with bias."""
    params, stats = _fold_tree(variables['params'], variables.get('batch_stats', {}))
    return {'params': params, 'batch_stats': stats}


def reparameterize(model: nn.Module, variables: Mapping[str, Any]) -> tuple[nn.Module, dict]:
    """(folded model, its variables) for a GhostNetV3 in training form; any other model
    (v1, v2, the CIFAR testbeds, an already folded v3) comes back as it is.

    `variables` is {'params', 'batch_stats'} of `model`; the folded arrays are host numpy
    arrays in the params' dtype (the arithmetic is float64).
    """
    if getattr(model, 'version', None) != 'v3' or model.reparameterized:
        return model, dict(variables)
    return model.clone(reparameterized=True), fold_branches(variables)
