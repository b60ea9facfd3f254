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
import ml_collections
import numpy as np
from etils import epath

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


def pretrained_model_name(path: str) -> str | None:
    """The registry name of the architecture `init_from` holds: a conversion's convert.json,
    or the config.json of the run a workdir, its checkpoints folder or one of its steps
    belongs to. None when neither records it (a step directory copied out of its run)."""
    root = epath.Path(path)
    if (root / INFO_FILE).exists():
        return converted_info(path).get('model')
    for candidate in (root, root.parent, root.parent.parent):
        config = candidate / 'config.json'
        inside = candidate == root or (candidate / 'checkpoints').is_dir()
        if inside and config.exists():
            try:
                return json.loads(config.read_text())['model']['name'] or None
            except (ValueError, KeyError, TypeError):
                return None
    return None


def adopt_pretrained_architecture(config: ml_collections.ConfigDict) -> None:
    """Makes `config.model.name` the architecture of `config.init_from` when the config left
    it empty (configs/finetune.py), and refuses (CheckpointError, exit 5) an init_from of
    another architecture than the one the config names, before anything is built."""
    if not config.get('init_from'):
        return
    from ghostnet_jax.training.checkpoints import CheckpointError  # orbax: only when needed

    theirs, ours = pretrained_model_name(config.init_from), config.model.name
    if not ours:
        if theirs is None:
            raise CheckpointError(
                f'model.name is empty, which means "the architecture of init_from", but '
                f'{config.init_from} does not record its architecture (no config.json of its '
                'run, no convert.json). Name it: --config.model.name=NAME (a registered '
                'model: docs/serving.md#models).'
            )
        config.model.name = theirs
        log.info(
            'init_from %s holds %s: training that architecture (model.name was '
            'empty; set --config.model.name to choose another).',
            config.init_from,
            theirs,
        )
    elif theirs is not None and theirs != ours:
        raise CheckpointError(
            f'init_from {config.init_from} holds {theirs}, but the config builds {ours} '
            f'(model.name). To fine-tune {theirs}, set --config.model.name={theirs} (or '
            "--config.model.name='' to always take init_from's architecture); to train "
            f'{ours}, point init_from at weights of {ours}.'
        )


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
        from ghostnet_jax.training.checkpoints import CheckpointError

        raise CheckpointError(
            f'The init_from checkpoint lacks {len(missing)} variables of this model, e.g. '
            f'{", ".join(missing[:3])}: it holds another architecture. Set --config.model.name '
            "to the checkpoint's architecture (or '' to take it from its run's config.json)."
        )
    if reinit:
        log.warning(
            'init_from: re-initialized %d variables with other shapes: %s', len(reinit), reinit
        )
    return merged
