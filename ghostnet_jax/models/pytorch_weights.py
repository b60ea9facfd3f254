"""PyTorch GhostNet/V2/V3 weights (timm or the official huawei-noah code) as Flax variables.

    state_dict = load_state_dict('ghostnet.pth')                    # .pth/.pt/.bin or .safetensors
    variables = from_torch_state_dict(state_dict, 'ghostnet_100')   # {'params', 'batch_stats'}

The key mapping is derived from the Flax variable tree itself (module names mirror the
PyTorch state_dict), so the expected key set always matches the model that will consume
it. Writing and reading a converted directory (`python -m ghostnet_jax.convert`) is
`ghostnet_jax.serving.converted` (reading it: `ghostnet_jax.training.pretrained`).
"""

from __future__ import annotations

import functools
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ghostnet_jax.models.ghostnet import GhostNet
from ghostnet_jax.models.mobilenetv3 import MobileNetV3
from ghostnet_jax.models.registry import create_model
from ghostnet_jax.optional import require

TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.tar')  # .tar: the old `.pth.tar` convention
SAFETENSORS_SUFFIXES = ('.safetensors',)

# Flax submodule name -> PyTorch state_dict path segment, where they differ. The official code
# builds these as nn.Sequential, so PyTorch names them by position.
_MODULE_TO_TORCH = {
    'primary_conv': 'primary_conv.0',
    'primary_bn': 'primary_conv.1',
    'cheap_operation': 'cheap_operation.0',
    'cheap_bn': 'cheap_operation.1',
    'shortcut_dw': 'shortcut.0',
    'shortcut_dw_bn': 'shortcut.1',
    'shortcut_pw': 'shortcut.2',
    'shortcut_pw_bn': 'shortcut.3',
    'dfc': 'short_conv',  # GhostNetV2/V3's DFC attention, an nn.Sequential there too
}
# The layers of DFC attention (ghost_blocks.DFCAttention) -> their position in short_conv.
_DFC_TO_TORCH = {'conv': '0', 'bn': '1', 'conv_h': '2', 'bn_h': '3', 'conv_v': '4', 'bn_v': '5'}
# GhostNetV3's branch lists are nn.ModuleLists: primary_rpr_conv_2 -> primary_rpr_conv.2.
_BRANCH_NAME = re.compile(r'^(\w+_rpr_conv)_(\d+)$')
# (collection, Flax leaf name) -> PyTorch parameter/buffer name.
_LEAF_TO_TORCH = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}
_BLOCK_NAME = re.compile(r'^blocks_(\d+)_(\d+)$')
# The official checkpoint names the final ConvBnAct's norm `bn`; timm (and we) call it `bn1`.
_OFFICIAL_BN_ALIAS = re.compile(
    r'^(blocks\.\d+\.0\.)bn\.(weight|bias|running_mean|running_var|num_batches_tracked)$'
)
# The official GhostNetV3 code names each branch's norm `bn` (timm: `bn1`).
_OFFICIAL_BRANCH_BN_ALIAS = re.compile(r'(_rpr_(?:conv\.\d+|scale)\.)bn\.')
# A BatchNorm step counter, and the counters the `thop` profiler registers on every module
# (left in the official GhostNetV3 checkpoints): bookkeeping with no counterpart here.
_IGNORED_NAMES = ('num_batches_tracked', 'total_ops', 'total_params')


class PyTorchWeightsError(ValueError):
    """A PyTorch weights file that cannot be used: not found, of an unknown type, unsafe to
    unpickle, or not fitting the model (exit code 5 in the commands)."""


class StateDictMismatchError(PyTorchWeightsError):
    """The state_dict does not fit the model; lists every missing, unexpected and misshapen key."""

    def __init__(
        self,
        model_name: str,
        missing: Sequence[str],
        unexpected: Sequence[str],
        wrong_shapes: Sequence[str],
    ):
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.wrong_shapes = list(wrong_shapes)
        lines = [f'The state_dict does not match {model_name!r}.']
        for title, items in (
            ('Missing keys', self.missing),
            ('Unexpected keys', self.unexpected),
            ('Wrong shapes (PyTorch layout)', self.wrong_shapes),
        ):
            if items:
                lines.append(f'{title} ({len(items)}):')
                lines.extend(f'  {item}' for item in items)
        lines.append(
            'Check the model name (version v1/v2/v3, width, ImageNet vs CIFAR variant) '
            'and --num-classes.'
        )
        if any('_rpr_' in key for key in self.missing) and any(
            key.endswith(('primary_conv.0.bias', 'conv_dw.bias')) for key in self.unexpected
        ):
            lines.append(
                'This looks like a re-parameterized (deploy) GhostNetV3 state_dict: '
                'convert it with the model override reparameterized=True.'
            )
        super().__init__('\n'.join(lines))


class UnsafeCheckpointError(PyTorchWeightsError):
    """A checkpoint that only full (code-executing) unpickling could load."""


# ----------------------------------------------------------------------------- key mapping


def _is_ignored(key: str) -> bool:
    return key.rsplit('.', 1)[-1] in _IGNORED_NAMES


def _torch_module_name(name: str, parent: str | None) -> str:
    if parent == 'dfc':
        return _DFC_TO_TORCH[name]
    if block := _BLOCK_NAME.match(name):
        return f'blocks.{block[1]}.{block[2]}'
    if branch := _BRANCH_NAME.match(name):
        return f'{branch[1]}.{branch[2]}'
    return _MODULE_TO_TORCH.get(name, name)


def _torch_key(collection: str, path: tuple[str, ...]) -> str:
    *modules, leaf = path
    parts = [_torch_module_name(name, parent) for parent, name in zip([None, *modules], modules)]
    try:
        parts.append(_LEAF_TO_TORCH[(collection, leaf)])
    except KeyError:
        raise ValueError(f'No PyTorch name for {collection}/{"/".join(path)}.') from None
    return '.'.join(parts)


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    # Conv kernels are HWIO here, OIHW in PyTorch; Dense kernels are (in, out), Linear (out, in).
    if len(flax_shape) == 4:
        kh, kw, i, o = flax_shape
        return (o, i, kh, kw)
    return tuple(reversed(flax_shape)) if len(flax_shape) == 2 else tuple(flax_shape)


def _to_flax_layout(array: np.ndarray) -> np.ndarray:
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array.T if array.ndim == 2 else array


def build_ghostnet(model_name: str, **model_overrides: Any) -> GhostNet | MobileNetV3:
    """The registry model whose timm weights can be read: a GhostNet/V2/V3, or a
    MobileNetV3 (the inference benchmark's reference; its layer names are timm's too)."""
    model = create_model(model_name, **model_overrides)
    if not isinstance(model, (GhostNet, MobileNetV3)):
        raise ValueError(
            f'PyTorch import supports the GhostNet family and MobileNetV3 only, not {model_name!r}.'
        )
    return model


def abstract_variables(model: GhostNet) -> dict[str, Any]:
    """Shapes and dtypes of `model`'s variables, without allocating or computing anything.

    GhostNet ends in global pooling, so no parameter shape depends on the input size; 32x32
    is just the cheapest input, or the smallest one a V2/V3 with ImageNet strides accepts.
    """
    # A fresh copy of the containers: callers may edit the tree they get.
    return jax.tree.map(lambda leaf: leaf, _abstract_variables(model))


@functools.lru_cache(maxsize=8)
def _abstract_variables(model: GhostNet) -> dict[str, Any]:
    # Cached: tracing a GhostNetV3 takes ~1-2 s, and converting, then loading the result,
    # asks for the same model's shapes several times. Linen modules hash by their fields.
    init = functools.partial(model.init, train=False)
    size = max(32, model.min_input_size())
    return jax.eval_shape(
        init, jax.random.key(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    )


def _expected(model: GhostNet) -> dict[str, tuple[tuple[str, ...], jax.ShapeDtypeStruct]]:
    """PyTorch key -> (Flax flat path incl. collection, abstract leaf)."""
    flat = traverse_util.flatten_dict(abstract_variables(model))
    return {_torch_key(path[0], path[1:]): (path, leaf) for path, leaf in flat.items()}


def expected_torch_shapes(model_name: str, **model_overrides: Any) -> dict[str, tuple[int, ...]]:
    """The PyTorch state_dict keys and shapes `model_name` needs (num_batches_tracked omitted).

    A GhostNetV3 needs its training-form branches; with `reparameterized=True` its folded
    (timm `reparameterize_model` / deploy) form."""
    model = build_ghostnet(model_name, **model_overrides)
    return {key: _torch_shape(leaf.shape) for key, (_, leaf) in _expected(model).items()}


def _normalize_keys(state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Strips a DataParallel `module.` prefix and renames the official `bn` alias.

    Returns the renamed dict and the keys that collided with another one after renaming.
    """
    keys = list(state_dict)
    prefix = 'module.' if keys and all(k.startswith('module.') for k in keys) else ''
    renamed: dict[str, Any] = {}
    duplicates = []
    for key, value in state_dict.items():
        new = key[len(prefix) :]
        new = _OFFICIAL_BN_ALIAS.sub(r'\1bn1.\2', new)
        new = _OFFICIAL_BRANCH_BN_ALIAS.sub(r'\1bn1.', new)
        if new in renamed:
            duplicates.append(f'{key} (duplicates {new})')
        else:
            renamed[new] = value
    return renamed, duplicates


def from_torch_state_dict(
    state_dict: Mapping[str, Any], model_name: str, **model_overrides: Any
) -> dict[str, Any]:
    """Converts a timm/official GhostNet/V2/V3 state_dict into Flax variables for `model_name`.

    `state_dict` maps PyTorch keys to arrays (numpy, or anything `np.asarray` accepts) in
    PyTorch layout. `num_classes` is taken from `classifier.weight` unless given in
    `model_overrides`. Returns {'params': ..., 'batch_stats': ...} as nested dicts of host
    numpy arrays in the model's param dtype. Raises StateDictMismatchError (a ValueError)
    listing every missing, unexpected and misshapen key.
    """
    renamed, duplicates = _normalize_keys(state_dict)
    classifier = renamed.get('classifier.weight')
    if 'num_classes' not in model_overrides and getattr(classifier, 'ndim', 0) == 2:
        model_overrides = {**model_overrides, 'num_classes': int(classifier.shape[0])}
    expected = _expected(build_ghostnet(model_name, **model_overrides))

    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(k for k in renamed if k not in expected and not _is_ignored(k)) + duplicates
    wrong_shapes = []
    flat = {}
    for key, (path, leaf) in expected.items():
        if key not in renamed:
            continue
        value = renamed[key]
        want = _torch_shape(leaf.shape)
        if not hasattr(value, 'shape'):
            wrong_shapes.append(f'{key}: not an array ({type(value).__name__}), expected {want}')
            continue
        if tuple(value.shape) != want:
            wrong_shapes.append(f'{key}: checkpoint {tuple(value.shape)}, model expects {want}')
            continue
        flat[path] = np.ascontiguousarray(_to_flax_layout(np.asarray(value)), dtype=leaf.dtype)
    if missing or unexpected or wrong_shapes:
        raise StateDictMismatchError(model_name, missing, unexpected, sorted(wrong_shapes))
    return traverse_util.unflatten_dict(flat)


# ----------------------------------------------------------------------------- reading files


def _unwrap(obj: Any) -> Any:
    # Training scripts save {'state_dict': ..., 'epoch': ...} or {'model': ...}.
    while isinstance(obj, Mapping):
        inner = next(
            (obj[k] for k in ('state_dict', 'model') if isinstance(obj.get(k), Mapping)), None
        )
        if inner is None:
            break
        obj = inner
    return obj


def _load_torch_file(path: Path) -> dict[str, Any]:
    # Only .pth/.pt files need PyTorch (re-saved as .safetensors they need only safetensors).
    torch = require('torch', 'torch', f'Reading {path.name} (a PyTorch pickle)')
    try:
        # weights_only=True: tensors and plain containers only. A .pth file is untrusted input
        # and full unpickling can execute arbitrary code.
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        detail = re.search(r'Unsupported global: [^\n]*?(?= was not|\n|$)', str(e))
        raise UnsafeCheckpointError(
            f'Refusing to load {path}: it contains Python objects that only full unpickling '
            f'could rebuild ({detail[0] if detail else type(e).__name__}), and full unpickling '
            'can run arbitrary code from the file. If you trust the file, re-save only its '
            "weights where it was made: torch.save(model.state_dict(), 'plain.pth'), or "
            "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')."
        ) from e
    obj = _unwrap(obj)
    if not isinstance(obj, Mapping):
        raise PyTorchWeightsError(f'{path} holds a {type(obj).__name__}, not a state_dict.')
    out = {}
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            # numpy has no bfloat16; float32 is exact for it.
            value = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
        out[key] = value
    return out


def _load_safetensors_file(path: Path) -> dict[str, np.ndarray]:
    # The numpy backend: no PyTorch needed.
    safetensors = require('safetensors.numpy', 'torch', f'Reading {path.name} (safetensors)')
    return safetensors.load_file(str(path))


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a PyTorch state_dict from .pth/.pt/.bin/.tar (torch) or .safetensors (numpy).

    Pickle files load with `weights_only=True`; one that needs full unpickling raises
    UnsafeCheckpointError. {'state_dict': ...} and {'model': ...} wrappers are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise PyTorchWeightsError(f'No checkpoint file at {path}.')
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _load_safetensors_file(path)
    if suffix in TORCH_SUFFIXES:
        return _load_torch_file(path)
    raise PyTorchWeightsError(
        f'Unknown checkpoint type {path.name!r}: expected one of '
        f'{", ".join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)}.'
    )
