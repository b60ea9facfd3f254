"""Converted weights on disk: the directory `python -m ghostnet_jax.convert` writes from a
PyTorch checkpoint, and reading it back (for `ghostnet_jax.load` and `init_from`).

Layout (the contract with the trainer and `load`):
    DIR/variables/     Orbax StandardCheckpointer pytree {'params': ..., 'batch_stats': ...}
    DIR/convert.json   model name, num_classes, sha256 of the source file, and what
                       `ghostnet_jax.load`/predict/export need to use the weights on their
                       own: a ModelSpec (`model_spec`: ImageNet class names and
                       normalization for 1000-class ImageNet models) and the host-side
                       `preprocessing` (timm's eval transform: resize 256, centre crop 224)
"""
from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ghostnet_jax.models.pytorch_weights import (build_ghostnet, abstract_variables,
                                                 from_torch_state_dict, load_state_dict)

VARIABLES_SUBDIR = 'variables'
INFO_FILE = 'convert.json'
INFO_FORMAT = 'ghostnet_jax.convert/1'


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _refuse_non_empty(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(errno.EEXIST, f'{out_dir} already exists and is not an empty '
                              'directory; refusing to write there (nothing saved is ever '
                              'overwritten)', str(out_dir))


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
    model = build_ghostnet(model_name, num_classes=num_classes)
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
    target = abstract_variables(build_ghostnet(info['model'], num_classes=info['num_classes']))
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(directory / VARIABLES_SUBDIR, target)
