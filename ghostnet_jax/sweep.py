"""Grid search: `python -m ghostnet_jax.sweep [--config configs/NAME.py] [--workdir DIR]
--grid optimizer.learning_rate=0.001,0.01,0.1 --grid batch_size=16,32,64
[--config.FIELD=VALUE ...] [--vectorize]`.

Every combination trains in WORKDIR/<field=value,...>/ exactly as
`python -m ghostnet_jax.train` would; rerunning the same command skips finished runs and
resumes a killed one. Writes WORKDIR/results.csv, results.md and, for two axes, heatmap.png
(validation accuracy; the best run is chosen by validation accuracy, never test).
`--variant NAME:FIELD=VALUE,...` (repeatable) names runs instead of a grid, e.g. an
ablation's baseline and one switch at a time. `--vectorize` trains runs that differ only in learning rate, weight decay, label smoothing,
dropout rate or seed together, as one jax.vmap-ed program."""
from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from ghostnet_jax.study.command import DEFAULT_CONFIG_FILE, default_workdir, prepare

_CONFIG = config_flags.DEFINE_config_file('config', DEFAULT_CONFIG_FILE,
                                          'Config file (configs/NAME.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Sweep folder; default runs/<config>-sweep-<time>.')
_GRID = flags.DEFINE_multi_string('grid', [], 'FIELD=V1,V2,... (repeat for more axes).')
_VARIANT = flags.DEFINE_multi_string(
    'variant', [], 'NAME:FIELD=VALUE,... a named run instead of a grid (repeat; NAME: alone is '
    'the config as is), e.g. for an ablation: baseline + one switch at a time.')
_VECTORIZE = flags.DEFINE_bool('vectorize', False,
                               'Train shape-preserving combinations together under jax.vmap.')


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    from ghostnet_jax.study.grid import parse_grid, parse_variants
    from ghostnet_jax.study.sweep import SweepError, run_sweep
    from ghostnet_jax.training.config_checks import ConfigError
    config = _CONFIG.value
    try:
        prepare(config)
        axes, variants = parse_grid(_GRID.value), parse_variants(_VARIANT.value)
        if not axes and not variants:
            raise ValueError('give --grid FIELD=V1,V2,... axes or --variant NAME:FIELD=VALUE runs')
        workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename, 'sweep')
        out = run_sweep(config, axes, workdir, vectorize=_VECTORIZE.value, variants=variants)
    except (ConfigError, ValueError, SweepError) as e:
        logging.error('%s', e)
        return 2
    print(out['table'])
    best = out['best']
    print(f'Trained {len(out["trained"])}, skipped {len(out["skipped"])} finished runs.')
    if best:
        print(f'Best by validation accuracy: {best["run"]} (val accuracy '
              f'{best["val_accuracy"]:.4f}, val loss {best["val_loss"]:.4f})')
    print(f'Written: {workdir}/results.csv, {workdir}/results.md'
          + (f', {workdir}/heatmap.png' if len(axes) == 2 and not variants else ''))
    return 0


if __name__ == '__main__':
    from ghostnet_jax.cli_process import prepare_cli_process
    prepare_cli_process('ghostnet_jax.sweep')
    from ghostnet_jax.exit_codes import run_cli
    # Data, checkpoint and storage failures: one paragraph and the documented exit code.
    app.run(lambda argv: sys.exit(run_cli(lambda: main(argv), 'python -m ghostnet_jax.sweep')))
