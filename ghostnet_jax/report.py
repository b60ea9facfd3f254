"""Report of a training run: `python -m ghostnet_jax.report --workdir DIR`.

Reads DIR's metrics.jsonl, results.json and best checkpoint (no training) and writes
DIR/report/report.md with curves (train vs validation loss/accuracy, learning rate,
per-stage gradient norms, update/parameter ratio), an over/underfitting diagnosis,
gradient-health warnings, the confusion matrix and per-class accuracy on the test split
(validation when the run has none) and a grid of misclassified images."""
from __future__ import annotations

import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string('workdir', None, 'A run folder written by ghostnet_jax.train.',
                               required=True)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    from ghostnet_jax.study.command import prepare_logging
    from ghostnet_jax.study.report import write_report
    prepare_logging()
    try:
        path = write_report(_WORKDIR.value)
    except FileNotFoundError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(path.read_text())
    print(f'Written: {path}')
    return 0


if __name__ == '__main__':
    from ghostnet_jax.exit_codes import run_cli
    # Data, checkpoint and storage failures: one paragraph and the documented exit code.
    app.run(lambda argv: sys.exit(run_cli(lambda: main(argv), 'python -m ghostnet_jax.report')))
