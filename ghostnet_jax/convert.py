"""Import PyTorch GhostNet weights (timm or the official huawei-noah code) into ghostnet_jax.

Python API:
    variables = from_torch_state_dict(state_dict, 'ghostnet_100')   # {'params', 'batch_stats'}
    state_dict = load_state_dict('ghostnet.pth')                    # .pth/.pt/.bin or .safetensors

Command line (writes an Orbax checkpoint the trainer can start from):
    python -m ghostnet_jax.convert --checkpoint ghostnet.pth --model ghostnet_100 --out DIR

Output layout (the contract with the trainer, read back by `load_converted`):
    DIR/variables/     Orbax StandardCheckpointer pytree {'params': ..., 'batch_stats': ...}
    DIR/convert.json   model name, num_classes, sha256 of the source file, and what
                       `ghostnet_jax.load`/predict/export need to use the weights on their
                       own: a ModelSpec (`model_spec`: ImageNet class names and
                       normalization for 1000-class ImageNet models) and the host-side
                       `preprocessing` (timm's eval transform: resize 256, centre crop 224)

The key mapping is derived from the Flax variable tree itself (module names mirror the PyTorch
state_dict), so the expected key set always matches the model that will consume it.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import json
import os
import pickle
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ghostnet_jax.models import GhostNet, create_model

TORCH_EXTRA_HINT = "pip install 'ghostnet_jax[torch]'"
TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.tar')   # .tar: the old `.pth.tar` convention
SAFETENSORS_SUFFIXES = ('.safetensors',)
VARIABLES_SUBDIR = 'variables'
INFO_FILE = 'convert.json'
INFO_FORMAT = 'ghostnet_jax.convert/1'

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
}
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
    r'^(blocks\.\d+\.0\.)bn\.(weight|bias|running_mean|running_var|num_batches_tracked)$')
# A BatchNorm step counter: PyTorch bookkeeping with no counterpart in the Flax model.
_IGNORED_SUFFIXES = ('.num_batches_tracked',)


class StateDictMismatchError(ValueError):
    """The state_dict does not fit the model; lists every missing, unexpected and misshapen key."""

    def __init__(self, model_name: str, missing: Sequence[str], unexpected: Sequence[str],
                 wrong_shapes: Sequence[str]):
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.wrong_shapes = list(wrong_shapes)
        lines = [f'The state_dict does not match {model_name!r}.']
        for title, items in (('Missing keys', self.missing),
                             ('Unexpected keys', self.unexpected),
                             ('Wrong shapes (PyTorch layout)', self.wrong_shapes)):
            if items:
                lines.append(f'{title} ({len(items)}):')
                lines.extend(f'  {item}' for item in items)
        lines.append('Check the model name (width 050/100/130, ImageNet vs CIFAR variant) and '
                     '--num-classes.')
        super().__init__('\n'.join(lines))


class UnsafeCheckpointError(ValueError):
    """A checkpoint that only full (code-executing) unpickling could load."""


# ----------------------------------------------------------------------------- key mapping


def _torch_key(collection: str, path: tuple[str, ...]) -> str:
    *modules, leaf = path
    parts = []
    for name in modules:
        block = _BLOCK_NAME.match(name)
        parts.append(f'blocks.{block[1]}.{block[2]}' if block else _MODULE_TO_TORCH.get(name, name))
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


def _build_model(model_name: str, **model_overrides: Any) -> GhostNet:
    model = create_model(model_name, **model_overrides)
    if not isinstance(model, GhostNet):
        raise ValueError(f'PyTorch import supports the GhostNet family only, not {model_name!r}.')
    return model


def abstract_variables(model: GhostNet) -> dict[str, Any]:
    """Shapes and dtypes of `model`'s variables, without allocating or computing anything.

    GhostNet ends in global pooling, so no parameter shape depends on the input size; 32x32
    is just the cheapest input every variant accepts.
    """
    init = functools.partial(model.init, train=False)
    return jax.eval_shape(init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


def _expected(model: GhostNet) -> dict[str, tuple[tuple[str, ...], jax.ShapeDtypeStruct]]:
    """PyTorch key -> (Flax flat path incl. collection, abstract leaf)."""
    flat = traverse_util.flatten_dict(abstract_variables(model))
    return {_torch_key(path[0], path[1:]): (path, leaf) for path, leaf in flat.items()}


def expected_torch_shapes(model_name: str, **model_overrides: Any) -> dict[str, tuple[int, ...]]:
    """The PyTorch state_dict keys and shapes `model_name` needs (num_batches_tracked omitted)."""
    model = _build_model(model_name, **model_overrides)
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
        new = key[len(prefix):]
        new = _OFFICIAL_BN_ALIAS.sub(r'\1bn1.\2', new)
        if new in renamed:
            duplicates.append(f'{key} (duplicates {new})')
        else:
            renamed[new] = value
    return renamed, duplicates


def from_torch_state_dict(state_dict: Mapping[str, Any], model_name: str,
                          **model_overrides: Any) -> dict[str, Any]:
    """Converts a timm/official GhostNet state_dict into Flax variables for `model_name`.

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
    expected = _expected(_build_model(model_name, **model_overrides))

    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(k for k in renamed
                        if k not in expected and not k.endswith(_IGNORED_SUFFIXES)) + duplicates
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
        inner = next((obj[k] for k in ('state_dict', 'model')
                      if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    return obj


def _load_torch_file(path: Path) -> dict[str, Any]:
    try:
        import torch  # Optional dependency: only .pth/.pt files need it.
    except ImportError as e:
        raise ImportError(
            f'Reading {path.name} needs PyTorch, an optional dependency: {TORCH_EXTRA_HINT}. '
            '(Or re-save the weights as .safetensors, which needs only `safetensors`.)') from e
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
            "safetensors.torch.save_file(model.state_dict(), 'model.safetensors').") from e
    obj = _unwrap(obj)
    if not isinstance(obj, Mapping):
        raise ValueError(f'{path} holds a {type(obj).__name__}, not a state_dict.')
    out = {}
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            # numpy has no bfloat16; float32 is exact for it.
            value = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
        out[key] = value
    return out


def _load_safetensors_file(path: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file  # numpy backend: no PyTorch needed.
    except ImportError as e:
        raise ImportError(
            f'Reading {path.name} needs the `safetensors` package: pip install safetensors '
            f'(it is part of {TORCH_EXTRA_HINT}).') from e
    return load_file(str(path))


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a PyTorch state_dict from .pth/.pt/.bin/.tar (torch) or .safetensors (numpy).

    Pickle files load with `weights_only=True`; one that needs full unpickling raises
    UnsafeCheckpointError. {'state_dict': ...} and {'model': ...} wrappers are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'No checkpoint file at {path}.')
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _load_safetensors_file(path)
    if suffix in TORCH_SUFFIXES:
        return _load_torch_file(path)
    raise ValueError(f'Unknown checkpoint type {path.name!r}: expected one of '
                     f'{", ".join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)}.')


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- Orbax output


def _refuse_non_empty(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f'{out_dir} already exists and is not an empty directory; '
                              'refusing to write there (nothing saved is ever overwritten).')


def convert_checkpoint(checkpoint: str | os.PathLike, model_name: str,
                       out_dir: str | os.PathLike, num_classes: int | None = None) -> Path:
    """Converts a PyTorch checkpoint file into an Orbax checkpoint directory; returns it."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir).absolute()  # Orbax wants absolute.
    _refuse_non_empty(out_dir)   # Fail before the slow part, and again just before writing.
    overrides = {} if num_classes is None else {'num_classes': num_classes}
    variables = from_torch_state_dict(load_state_dict(checkpoint), model_name, **overrides)
    num_classes = int(variables['params']['classifier']['kernel'].shape[1])
    spec, preprocessing, guessed = serving_metadata(model_name, num_classes)
    info = {
        'format': INFO_FORMAT,
        'model': model_name,
        'num_classes': num_classes,
        'source_file': str(checkpoint.absolute()),
        'source_sha256': _sha256(checkpoint),
        'created_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'model_spec': spec.to_json(),
        'preprocessing': preprocessing.to_json(),
        # True when the head is not ImageNet-1k: class names and normalization are then
        # placeholders (class_i, ImageNet statistics), not facts about the weights.
        'metadata_guessed': guessed,
    }

    import orbax.checkpoint as ocp  # Deferred: slow to import, and only writing needs it.
    _refuse_non_empty(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Orbax writes into a temporary directory and renames it, and never replaces an existing
    # step (force=False), so a crash leaves no half-written `variables`.
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(out_dir / VARIABLES_SUBDIR, variables)
        checkpointer.wait_until_finished()
    # convert.json is written last, exclusively ('x'): its presence marks a complete conversion.
    with open(out_dir / INFO_FILE, 'x') as f:
        json.dump(info, f, indent=2)
        f.write('\n')
    return out_dir


def serving_metadata(model_name: str, num_classes: int):
    """(ModelSpec, Preprocessing, guessed) recorded with converted weights."""
    from ghostnet_jax.serving.imagenet import converted_spec
    model = _build_model(model_name, num_classes=num_classes)
    return converted_spec(model_name, num_classes, is_cifar=model.stem_stride == 1,
                          source='converted PyTorch weights (timm/official)')


def converted_info(directory: str | os.PathLike) -> dict[str, Any]:
    """The convert.json record of a converted checkpoint directory."""
    path = Path(directory) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f'{path} is missing: {directory} is not a completed conversion.')
    info = json.loads(path.read_text())
    if info.get('format') != INFO_FORMAT:
        raise ValueError(f'{path} has format {info.get("format")!r}, expected {INFO_FORMAT!r}.')
    return info


def load_converted(directory: str | os.PathLike) -> dict[str, Any]:
    """Restores {'params', 'batch_stats'} written by `convert_checkpoint`.

    Returns nested dicts of arrays as Orbax restores them for unsharded targets (host numpy
    arrays with Orbax 0.12), the same structure `from_torch_state_dict` returns.

    Restores against the abstract variables of the recorded model, so a checkpoint that does
    not fit the model fails here rather than at the first training step.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    info = converted_info(directory)
    target = abstract_variables(_build_model(info['model'], num_classes=info['num_classes']))
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(directory / VARIABLES_SUBDIR, target)


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m ghostnet_jax.convert',
        description='Convert a PyTorch GhostNet checkpoint (timm or official) to an Orbax '
                    'checkpoint that ghostnet_jax training can start from.')
    parser.add_argument('--checkpoint', required=True,
                        help='.pth/.pt (needs torch) or .safetensors file with a state_dict')
    parser.add_argument('--model', required=True,
                        help='ghostnet_050/100/130 or ghostnet_cifar_050/100/130')
    parser.add_argument('--out', required=True, help='output directory (must not exist or be empty)')
    parser.add_argument('--num-classes', type=int, default=None,
                        help='default: inferred from classifier.weight')
    args = parser.parse_args(argv)
    try:
        out = convert_checkpoint(args.checkpoint, args.model, args.out, args.num_classes)
    except (ValueError, ImportError, OSError) as e:
        # Expected user errors: a message, not a traceback.
        print(f'error: {e}', file=sys.stderr)
        return 1
    info = converted_info(out)
    print(f'Wrote {info["model"]} ({info["num_classes"]} classes) to {out}')
    if info.get('metadata_guessed'):
        print('note: not an ImageNet-1k head, so class names (class_0, ...) and the input '
              'normalization (ImageNet statistics) recorded for predict/export are '
              f'placeholders; edit {out / INFO_FILE} if you know them.', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
