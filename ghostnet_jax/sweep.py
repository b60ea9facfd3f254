"""Grid search:

    python -m ghostnet_jax.sweep [--config configs/NAME.py] [--workdir DIR]
        --grid optimizer.learning_rate=0.001,0.01,0.1 --grid batch_size=16,32,64
        [--variant NAME:FIELD=VALUE,...] [--config.FIELD=VALUE ...] [--vectorize]

Every combination trains in WORKDIR/<field=value,...>/ exactly as
`python -m ghostnet_jax.train` would; rerunning the same command skips finished runs and
resumes a killed one. Writes WORKDIR/results.csv, results.md and, for two axes, heatmap.png
(validation accuracy; the best run is chosen by validation accuracy, never test).
`--variant NAME:FIELD=VALUE,...` (repeatable) names runs instead of a grid, e.g. an
ablation's baseline and one switch at a time. `--vectorize` trains runs that differ only
in learning rate, weight decay, label smoothing, dropout rate or seed together, as one
jax.vmap-ed program.
"""

from __future__ import annotations

import sys

from ghostnet_jax.cli import errors, flags

PROG = 'python -m ghostnet_jax.sweep'


def main(argv: list[str] | None = None) -> int:
    parser = flags.command_parser(PROG, __doc__, config=True)
    flags.add(
        parser, '--workdir', default=None, help='sweep folder; default runs/<config>-sweep-<time>'
    )
    flags.add(
        parser, '--grid', action='append', default=[], help='FIELD=V1,V2,... (repeat for more axes)'
    )
    flags.add(
        parser,
        '--variant',
        action='append',
        default=[],
        help='NAME:FIELD=VALUE,... a named run instead of a grid (repeat; NAME: alone '
        'is the config as is)',
    )
    flags.add(
        parser,
        '--vectorize',
        action='store_true',
        help='train shape-preserving combinations together under jax.vmap',
    )

    def body() -> int:
        args, config = flags.parse(parser, argv)
        from ghostnet_jax.study.grid import parse_grid, parse_variants
        from ghostnet_jax.study.sweep import run_sweep
        from ghostnet_jax.training.launch import check_config, default_workdir

        check_config(config)
        try:
            axes, variants = parse_grid(args.grid), parse_variants(args.variant)
        except ValueError as e:
            raise errors.UsageError(str(e)) from None
        if not axes and not variants:
            raise errors.UsageError(
                'give --grid FIELD=V1,V2,... axes or --variant NAME:FIELD=VALUE runs'
            )
        if axes and variants:
            raise errors.UsageError('give either --grid axes or --variant runs, not both.')
        workdir = args.workdir or default_workdir(args.config, 'sweep')
        out = run_sweep(config, axes, workdir, vectorize=args.vectorize, variants=variants)
        print(out['table'])
        best = out['best']
        print(f'Trained {len(out["trained"])}, skipped {len(out["skipped"])} finished runs.')
        if best:
            print(
                f'Best by validation accuracy: {best["run"]} (val accuracy '
                f'{best["val_accuracy"]:.4f}, val loss {best["val_loss"]:.4f})'
            )
        print(
            f'Written: {workdir}/results.csv, {workdir}/results.md'
            + (f', {workdir}/heatmap.png' if len(axes) == 2 and not variants else '')
        )
        return errors.OK

    return errors.run_command(PROG, body, argv)


if __name__ == '__main__':
    from ghostnet_jax.cli.process import prepare_process, setup_logging

    prepare_process()
    setup_logging()
    sys.exit(main())
