"""Sanity checks before a long run: `python -m ghostnet_jax.sanity [--config configs/NAME.py]
[--workdir DIR] [--config.FIELD=VALUE ...] [--sample_size 256] [--max_steps 300]`.

Checks the initial loss against ln(num_classes), overfits a fixed sample (no augmentation,
dropout or weight decay) and flags stages whose gradient vanishes or explodes at init.
Writes WORKDIR/sanity.json and WORKDIR/sanity_overfit.png; exits 1 when a check fails.
`--shuffle_labels` is a control: it breaks the labels on purpose and must fail."""
from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from ghostnet_jax.study.command import DEFAULT_CONFIG_FILE, default_workdir, prepare

_CONFIG = config_flags.DEFINE_config_file('config', DEFAULT_CONFIG_FILE,
                                          'Config file (configs/NAME.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder; default runs/<config>-sanity-<time>.')
_SAMPLE = flags.DEFINE_integer('sample_size', 256, 'Images in the fixed overfit sample.')
_STEPS = flags.DEFINE_integer('max_steps', 300, 'Overfit budget in steps.')
_TARGET = flags.DEFINE_float('target_accuracy', 0.99, 'Training accuracy counted as ~100%.')
_TOL = flags.DEFINE_float('init_loss_tolerance', 0.25, 'Allowed |loss - ln C| / ln C at init.')
_SHUFFLE = flags.DEFINE_bool('shuffle_labels', False, 'Control: permute the sample labels.')


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    from ghostnet_jax.study.sanity import SanityOptions, run_sanity, summary_text
    config = _CONFIG.value
    prepare(config)   # a ConfigError becomes 'Bad config: ...' and exit 2 (exit_codes.run_cli)
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename, 'sanity')
    report = run_sanity(config, workdir, SanityOptions(
        sample_size=_SAMPLE.value, max_steps=_STEPS.value, target_accuracy=_TARGET.value,
        init_loss_tolerance=_TOL.value, shuffle_labels=_SHUFFLE.value))
    print(summary_text(report))
    print(f'Written: {workdir}/sanity.json, {workdir}/sanity_overfit.png')
    return 0 if report['passed'] else 1


if __name__ == '__main__':
    from ghostnet_jax.cli_process import prepare_cli_process
    prepare_cli_process('ghostnet_jax.sanity')
    from ghostnet_jax.exit_codes import run_cli
    # Data, checkpoint and storage failures: one paragraph and the documented exit code.
    app.run(lambda argv: sys.exit(run_cli(lambda: main(argv), 'python -m ghostnet_jax.sanity')))
