"""What `config.init_from` reads, and how it joins a fresh model: one of this project's
runs (a workdir, its checkpoints folder or one step) or a directory of converted PyTorch
weights (`python -m ghostnet_jax.convert`, written by ghostnet_jax/serving/converted.py).

Converted-weights layout (the contract between `convert`, `load` and the trainer):
    DIR/variables/     Orbax StandardCheckpointer pytree {'params': ..., 'batch_stats': ...}
    DIR/convert.json   model name, num_classes, sha256 of the source file, and what
                       `ghostnet_jax.load`/predict/export need to use the weights on their
                       own: a ModelSpec (`model_spec`) and the host-side `preprocessing`
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ghostnet_jax.models.pytorch_weights import abstract_variables, build_ghostnet

log = logging.getLogger(__name__)

VARIABLES_SUBDIR = 'variables'
INFO_FILE = 'convert.json'
INFO_FORMAT = 'ghostnet_jax.convert/1'


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


def load_pretrained(path: str) -> dict:
    """Variables from one of our checkpoints/workdirs or a `ghostnet_jax.convert` output."""
    if (Path(path) / INFO_FILE).exists():
        return load_converted(path)
    from ghostnet_jax.training.checkpoints import load_variables

    return load_variables(path)


def merge_pretrained(fresh: dict, loaded: dict) -> dict:
    """Loaded weights into the fresh variables. Leaves whose shape differs (a classifier
    for another number of classes) keep their fresh init, with a warning; a missing
    leaf is an error, since the checkpoint is then for another architecture."""
    flat_loaded = dict(jax.tree_util.tree_leaves_with_path(loaded))
    reinit, missing = [], []

    def pick(path, leaf):
        if path not in flat_loaded:
            missing.append(jax.tree_util.keystr(path))
            return leaf
        value = np.asarray(flat_loaded[path])
        if value.shape != leaf.shape:
            reinit.append(f'{jax.tree_util.keystr(path)} {value.shape}->{leaf.shape}')
            return leaf
        return jnp.asarray(value, leaf.dtype)

    merged = jax.tree_util.tree_map_with_path(
        pick, {k: fresh[k] for k in ('params', 'batch_stats')}
    )
    if missing:
        raise ValueError(
            f'init_from checkpoint lacks {len(missing)} variables of this model '
            f'(another architecture?): {missing[:10]}'
        )
    if reinit:
        log.warning(
            'init_from: re-initialized %d variables with other shapes: %s', len(reinit), reinit
        )
    return merged
