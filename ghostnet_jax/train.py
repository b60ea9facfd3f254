"""Train GhostNet: `python -m ghostnet_jax.train [--config configs/NAME.py] [--workdir DIR]
[--config.FIELD=VALUE ...]`. With no arguments: the default CIFAR-10 recipe (sized for a
GPU or TPU; on a CPU, configs/cpu_hour.py is the one-hour recipe) into
runs/default-<timestamp>. Rerun with the same --workdir to resume.

Exit codes: 0 done or preempted (saved; rerun to resume), 1 unexpected error, 2 bad
config, 3 non-finite loss, 4 data error, 5 checkpoint error, 6 storage error
(docs/reliability.md). --verbose or GHOSTNET_JAX_VERBOSE=1 adds tracebacks.
"""

from __future__ import annotations

import sys

from ghostnet_jax.cli import errors, flags

PROG = 'python -m ghostnet_jax.train'


def main(argv: list[str] | None = None) -> int:
    parser = flags.command_parser(PROG, __doc__, config=True)
    flags.add(
        parser,
        '--workdir',
        default=None,
        help='run folder (default runs/<config>-<timestamp>); rerun it to resume',
    )

    def body() -> int:
        args, config = flags.parse(parser, argv)
        from ghostnet_jax.training.launch import train_run

        results = train_run(config, args.config, args.workdir)
        if results.get('status') == 'preempted':
            return errors.OK
        if config.report:
            from ghostnet_jax.study.report import report_finished_run

            report_finished_run(results['workdir'])
        print(
            f'Results in {results["workdir"]}/results.json: val accuracy '
            f'{results["val"]["accuracy"]:.4f}'
            + (f', test accuracy {results["test"]["accuracy"]:.4f}' if results['test'] else '')
        )
        return errors.OK

    return errors.run_command(PROG, body, argv)


if __name__ == '__main__':
    from ghostnet_jax.cli.process import prepare_process, setup_logging

    prepare_process()
    setup_logging()
    sys.exit(main())
