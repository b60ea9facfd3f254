"""Train GhostNet: `python -m ghostnet_jax.train [--config configs/NAME.py] [--workdir DIR]
[--config.FIELD=VALUE ...]`. With no arguments: the default CIFAR-10 recipe into
runs/default-<timestamp>. Rerun with the same --workdir to resume.

Exit codes: 0 done or preempted (saved; rerun to resume), 1 unexpected error, 2 bad
config, 3 non-finite loss, 4 data error, 5 checkpoint error, 6 storage error
(ghostnet_jax/exit_codes.py). GHOSTNET_JAX_VERBOSE=1 adds tracebacks."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from absl import app, flags
from etils import epath
from ml_collections import config_flags

from ghostnet_jax.configs import default as default_config

_CONFIG = config_flags.DEFINE_config_file(
    'config', str(Path(default_config.__file__)), 'Config file (configs/NAME.py).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder; default runs/<config>-<timestamp>.')


def default_workdir(config_path: str) -> epath.Path:
    name = Path(config_path.split(':')[0]).stem
    return epath.Path('runs') / f'{name}-{time.strftime("%Y%m%d-%H%M%S")}'


class _QuietLibraries(logging.Filter):
    """Orbax and JAX log every save/restore step at INFO; keep their warnings only."""

    def filter(self, record: logging.LogRecord) -> bool:
        noisy = any(part in record.pathname for part in ('/orbax/', '/jax/', '/jaxlib/'))
        return record.levelno >= logging.WARNING or not noisy


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietLibraries())
    from ghostnet_jax.training import parallel
    config = _CONFIG.value
    # Multi-process runs must join before anything else touches JAX.
    parallel.maybe_initialize_distributed(config.distributed)
    from ghostnet_jax.exit_codes import OK, report
    from ghostnet_jax.training.config_checks import validate_config
    from ghostnet_jax.training.trainer import train_and_evaluate
    workdir = epath.Path(_WORKDIR.value) if _WORKDIR.value else default_workdir(
        flags.FLAGS['config'].config_filename)
    try:
        validate_config(config, default_config.get_config())
        logging.info('Workdir: %s', workdir if '://' in str(workdir) else workdir.resolve())
        results = train_and_evaluate(config, workdir)
    except Exception as e:   # expected failures get one paragraph and a code
        return report(e, 'python -m ghostnet_jax.train')
    if results.get('status') == 'preempted':
        return OK
    print(f'Results in {workdir / "results.json"}: val accuracy '
          f'{results["val"]["accuracy"]:.4f}'
          + (f', test accuracy {results["test"]["accuracy"]:.4f}' if results['test'] else ''))
    return OK


if __name__ == '__main__':
    from ghostnet_jax.cli_process import prepare_cli_process
    prepare_cli_process('ghostnet_jax.train')
    app.run(lambda argv: sys.exit(main(argv)))
