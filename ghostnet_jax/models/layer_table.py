"""Per-layer table of a model: type, input/output shape, parameters and MACs.

Collected by intercepting every leaf module call during an abstract (shape-only) forward
pass, so it costs no FLOPs and works for any registered model at any input size.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ghostnet_jax.models.layers import Conv, kernel_hw


@dataclasses.dataclass(frozen=True)
class LayerRow:
    path: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclasses.dataclass(frozen=True)
class LayerTable:
    rows: tuple[LayerRow, ...]
    trainable_params: int
    bn_buffers: int
    macs: int


def _size(tree) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def _macs(module: nn.Module, in_shape, out_shape) -> int:
    """Multiply-accumulates per image: convs and dense layers only.

    This is the convention of the official GhostNet numbers (141M for 1.0x at 224): every
    conv (including squeeze-excite's 1x1s and the head) and the classifier; biases, BN,
    activations, pooling and the Ghost concat are not counted. Likewise for GhostNetV2's
    DFC attention: its convs count (at the pooled size), its 2x2 average pooling, sigmoid,
    nearest-neighbour upsampling and gating multiply do not. A GhostNetV3 in training form
    counts every branch conv; its identity-BN branches count nothing.
    """
    if isinstance(module, Conv):
        kh, kw = kernel_hw(module.kernel_size)
        return math.prod(out_shape[1:]) * kh * kw * (in_shape[-1] // module.groups)
    if isinstance(module, nn.Dense):
        return math.prod(out_shape[1:-1] or (1,)) * in_shape[-1] * out_shape[-1]
    return 0


def layer_table(model: nn.Module, input_size: int, channels: int = 3) -> LayerTable:
    """Builds the table for one image of `input_size` x `input_size` x `channels`."""
    rows: list[LayerRow] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name != '__call__' or module.scope is None or _has_children(module):
            return out
        x = args[0]
        variables = module.variables
        rows.append(
            LayerRow(
                path='/'.join(module.scope.path),
                kind=type(module).__name__,
                input_shape=tuple(x.shape),
                output_shape=tuple(out.shape),
                params=_size(variables.get('params', {})),
                macs=_macs(module, x.shape, out.shape),
            )
        )
        return out

    images = jnp.zeros((1, input_size, input_size, channels), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
    with nn.intercept_methods(record):
        jax.eval_shape(lambda v: model.apply(v, images, train=False), variables)
    return LayerTable(
        rows=tuple(rows),
        trainable_params=_size(variables['params']),
        bn_buffers=_size(variables.get('batch_stats', {})),
        macs=sum(r.macs for r in rows),
    )


def _has_children(module: nn.Module) -> bool:
    # Leaf layers (Conv, BatchNorm, Dense, Dropout) are the rows; containers are not.
    return any(isinstance(child, nn.Module) for child in module._state.children.values())


def format_table(table: LayerTable, fmt: str = 'text') -> str:
    """Renders the rows and totals as 'text' (aligned), 'markdown' or 'csv'."""
    header = ('layer', 'type', 'input', 'output', 'params', 'MACs')
    body = [
        (
            r.path,
            r.kind,
            'x'.join(map(str, r.input_shape[1:])),
            'x'.join(map(str, r.output_shape[1:])),
            f'{r.params:,}',
            f'{r.macs:,}',
        )
        for r in table.rows
    ]
    totals = [
        ('trainable params', f'{table.trainable_params:,}'),
        ('BatchNorm buffers (mean+var, not trained)', f'{table.bn_buffers:,}'),
        (
            'MACs per image (convs + dense, no bias/BN/activations)',
            f'{table.macs:,} ({table.macs / 1e6:.2f}M)',
        ),
    ]
    if fmt == 'csv':
        lines = [','.join(header)] + [','.join(c.replace(',', '') for c in row) for row in body]
        lines += [f'# {k},{v.replace(",", "")}' for k, v in totals]
        return '\n'.join(lines)
    if fmt == 'markdown':
        lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
        lines += ['| ' + ' | '.join(row) + ' |' for row in body]
        lines += [''] + [f'- {k}: {v}' for k, v in totals]
        return '\n'.join(lines)
    if fmt != 'text':
        raise ValueError(f'Unknown format {fmt!r}: use text, markdown or csv.')
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]

    def line(row):
        return '  '.join(
            str(c).rjust(w) if i >= 4 else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths))
        )

    lines = [line(header), '-' * (sum(widths) + 2 * (len(widths) - 1))]
    lines += [line(row) for row in body]
    lines += [''] + [f'{k}: {v}' for k, v in totals]
    return '\n'.join(lines)


def stats_summary(table: LayerTable) -> dict[str, int]:
    return {
        'trainable_params': table.trainable_params,
        'bn_buffers': table.bn_buffers,
        'macs': table.macs,
        'layers': len(table.rows),
    }


def native_input_size(model_name: str) -> int:
    """The input side a registered model is defined for: 224 for the ImageNet GhostNets
    (v1, v2, v3) and MobileNetV3s, 32 for the CIFAR networks."""
    imagenet = model_name.startswith(('ghostnet', 'mobilenetv3')) and 'cifar' not in model_name
    return 224 if imagenet else 32


def model_summary(
    model_name: str,
    input_size: int | None = None,
    num_classes: int | None = None,
    fmt: str = 'text',
    reparameterized: bool = False,
) -> str:
    """The per-layer table of a registered model, rendered (`python -m ghostnet_jax.summary`).

    `reparameterized`: a GhostNetV3's folded inference form instead of its training form."""
    from ghostnet_jax.models.registry import create_model

    overrides = {} if num_classes is None else {'num_classes': num_classes}
    if reparameterized:
        overrides['reparameterized'] = True
    model = create_model(model_name, **overrides)
    return format_table(layer_table(model, input_size or native_input_size(model_name)), fmt)
