"""What every study command does before its work: the trainer's config validation, quieter
library logs, and a default workdir next to train's runs/."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import ml_collections

from ghostnet_jax.configs import default as default_config

DEFAULT_CONFIG_FILE = str(Path(default_config.__file__))


class _QuietLibraries(logging.Filter):
    """Orbax and JAX log every save/restore at INFO; keep their warnings only."""

    def filter(self, record: logging.LogRecord) -> bool:
        noisy = any(part in record.pathname for part in ('/orbax/', '/jax/', '/jaxlib/'))
        return record.levelno >= logging.WARNING or not noisy


def prepare_logging() -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietLibraries())


def prepare(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (naming the field and its valid values) before any work."""
    prepare_logging()
    from ghostnet_jax.training.config_checks import validate_config
    validate_config(config, default_config.get_config())


def default_workdir(config_file: str, command: str) -> Path:
    name = Path(config_file.split(':')[0]).stem
    return Path('runs') / f'{name}-{command}-{time.strftime("%Y%m%d-%H%M%S")}'
