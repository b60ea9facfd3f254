"""LR range test: `python -m ghostnet_jax.lr_find [--config configs/NAME.py] [--workdir DIR]
[--config.FIELD=VALUE ...] [--min_lr 1e-6] [--max_lr 10] [--num_steps 200]`.

Trains from the config's initial state with an exponentially growing learning rate (the
configured optimizer, batch size, augmentation), stops when the smoothed loss diverges,
writes WORKDIR/lr_find.json and WORKDIR/lr_find.png and prints the suggested override."""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from ghostnet_jax.study.command import DEFAULT_CONFIG_FILE, default_workdir, prepare

_CONFIG = config_flags.DEFINE_config_file('config', DEFAULT_CONFIG_FILE,
                                          'Config file (configs/NAME.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder; default runs/<config>-lr_find-<time>.')
_MIN = flags.DEFINE_float('min_lr', 1e-6, 'First learning rate of the ramp.')
_MAX = flags.DEFINE_float('max_lr', 10.0, 'Last learning rate of the ramp.')
_STEPS = flags.DEFINE_integer('num_steps', 200, 'Steps of the ramp (unless it diverges first).')
_SMOOTH = flags.DEFINE_float('smoothing', 0.9, 'EMA factor of the loss.')


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    from ghostnet_jax.study.lr_find import LRFindOptions, run_lr_find
    config = _CONFIG.value
    prepare(config)   # a ConfigError becomes 'Bad config: ...' and exit 2 (exit_codes.run_cli)
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename, 'lr_find')
    result = run_lr_find(config, workdir, LRFindOptions(
        min_lr=_MIN.value, max_lr=_MAX.value, num_steps=_STEPS.value, smoothing=_SMOOTH.value))
    s = result['suggestion']
    print(f'{result["steps"]} steps, {result["stop_reason"]}.')
    print(f'Written: {workdir}/lr_find.json, {workdir}/lr_find.png')
    if s['learning_rate'] is None:
        print('No suggestion: too few finite losses; lower --min_lr or raise --num_steps.')
        return 1
    print(f'Minimum smoothed loss {s["min_smoothed_loss"]:.4f} at lr {s["min_loss_lr"]:.3g}; '
          f'steepest descent at lr {s["steepest"]:.3g}.')
    print(f'Suggested (rule: {s["rule"]}):')
    print(f'  --config.optimizer.learning_rate={s["learning_rate"]:.3g}')
    return 0


if __name__ == '__main__':
    from ghostnet_jax.cli_process import prepare_cli_process
    prepare_cli_process('ghostnet_jax.lr_find')
    from ghostnet_jax.exit_codes import run_cli
    # Data, checkpoint and storage failures: one paragraph and the documented exit code.
    app.run(lambda argv: sys.exit(run_cli(lambda: main(argv), 'python -m ghostnet_jax.lr_find')))
