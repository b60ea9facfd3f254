"""Writes converted weights: the directory `python -m ghostnet_jax.convert` makes from a
PyTorch checkpoint. Its layout and its reader (for `ghostnet_jax.load` and `init_from`)
are ghostnet_jax/training/pretrained.py; what is recorded for serving: a ModelSpec
(ImageNet class names and normalization for 1000-class ImageNet models) and the host-side
preprocessing (timm's eval transform: resize 256, centre crop 224).
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
from pathlib import Path

from ghostnet_jax.models.pytorch_weights import (
    build_ghostnet,
    from_torch_state_dict,
    load_state_dict,
)

# The directory's layout and its reader belong to what reads it back (init_from, load).
from ghostnet_jax.training.pretrained import INFO_FILE, INFO_FORMAT, VARIABLES_SUBDIR


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _refuse_non_empty(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            errno.EEXIST,
            f'{out_dir} already exists and is not an empty '
            'directory; refusing to write there (nothing saved is ever '
            'overwritten)',
            str(out_dir),
        )


def convert_checkpoint(
    checkpoint: str | os.PathLike,
    model_name: str,
    out_dir: str | os.PathLike,
    num_classes: int | None = None,
) -> Path:
    """Converts a PyTorch checkpoint file into an Orbax checkpoint directory; returns it."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir).absolute()  # Orbax wants absolute.
    _refuse_non_empty(out_dir)  # Fail before the slow part, and again just before writing.
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
    return converted_spec(
        model_name,
        num_classes,
        is_cifar=model.stem_stride == 1,
        source='converted PyTorch weights (timm/official)',
    )
