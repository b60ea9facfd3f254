"""Report of a training run: `python -m ghostnet_jax.report --workdir DIR`.

Reads DIR's metrics.jsonl, results.json and the weights results.json evaluated (no
training) and writes DIR/report/report.md with curves (train vs validation loss/accuracy,
learning rate, per-stage gradient norms, update/parameter ratio), an over/underfitting
diagnosis, gradient-health warnings, the confusion matrix and per-class accuracy on the
test split (validation when the run has none) and a grid of misclassified images.
"""

from __future__ import annotations

import sys

from ghostnet_jax.cli import errors, flags

PROG = 'python -m ghostnet_jax.report'


def main(argv: list[str] | None = None) -> int:
    parser = flags.command_parser(PROG, __doc__)
    flags.add(parser, '--workdir', required=True, help='a run folder written by ghostnet_jax.train')
    args, _ = flags.parse(parser, argv)

    def body() -> int:
        from ghostnet_jax.study.report import write_report

        path = write_report(args.workdir)
        print(path.read_text())
        print(f'Written: {path}')
        return errors.OK

    return errors.run_command(PROG, body, argv)


if __name__ == '__main__':
    from ghostnet_jax.cli.process import setup_logging

    setup_logging()
    sys.exit(main())
