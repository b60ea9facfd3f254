"""Starting work from a config, as every config-taking command does: check the whole
config before anything heavy (a bad one fails in seconds, naming the field), join the
other processes of a multi-host run, and choose the workdir."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import ml_collections
from etils import epath

log = logging.getLogger(__name__)


def default_workdir(config_file: str | None, command: str | None = None) -> epath.Path:
    """runs/<config>[-<command>]-<timestamp>, next to where the command runs."""
    name = Path((config_file or 'default').split(':')[0]).stem
    parts = [name, command] if command else [name]
    return epath.Path('runs') / f'{"-".join(parts)}-{time.strftime("%Y%m%d-%H%M%S")}'


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (naming the field and its valid values) before any work, and
    takes init_from's architecture where the config leaves model.name empty (refusing one
    that differs from the name it sets)."""
    from ghostnet_jax.configs import default as default_config
    from ghostnet_jax.training.config_checks import validate_config
    from ghostnet_jax.training.pretrained import adopt_pretrained_architecture

    validate_config(config, default_config.get_config())
    adopt_pretrained_architecture(config)


def train_run(
    config: ml_collections.ConfigDict, config_file: str | None = None, workdir: str | None = None
) -> dict:
    """`python -m ghostnet_jax.train`: checks `config`, joins a multi-process run, trains
    (or resumes) in `workdir` (default runs/<config>-<timestamp>) and returns results.json
    with the workdir added."""
    check_config(config)
    from ghostnet_jax.training import parallel

    # Multi-process runs must join before anything else touches JAX's backends.
    parallel.maybe_initialize_distributed(config.distributed)
    from ghostnet_jax.training.trainer import train_and_evaluate

    where = epath.Path(workdir) if workdir else default_workdir(config_file)
    log.info('Workdir: %s', where if '://' in str(where) else where.resolve())
    results = train_and_evaluate(config, where)
    return {**results, 'workdir': str(where)}
