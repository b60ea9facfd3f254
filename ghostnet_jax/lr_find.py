"""LR range test:

    python -m ghostnet_jax.lr_find [--config configs/NAME.py] [--workdir DIR]
        [--config.FIELD=VALUE ...] [--min-lr 1e-6] [--max-lr 10] [--num-steps 200]

Trains from the config's initial state with an exponentially growing learning rate (the
configured optimizer, batch size, augmentation), stops when the smoothed loss diverges,
writes WORKDIR/lr_find.json and WORKDIR/lr_find.png and prints the suggested override.
"""

from __future__ import annotations

import sys

from ghostnet_jax.cli import errors, flags

PROG = 'python -m ghostnet_jax.lr_find'


def main(argv: list[str] | None = None) -> int:
    parser = flags.command_parser(PROG, __doc__, config=True)
    flags.add(
        parser,
        '--workdir',
        default=None,
        help='output folder; default runs/<config>-lr_find-<time>',
    )
    flags.add(parser, '--min-lr', type=float, default=1e-6, help='first learning rate of the ramp')
    flags.add(parser, '--max-lr', type=float, default=10.0, help='last learning rate of the ramp')
    flags.add(
        parser,
        '--num-steps',
        type=int,
        default=200,
        help='steps of the ramp (unless it diverges first)',
    )
    flags.add(parser, '--smoothing', type=float, default=0.9, help='EMA factor of the loss')

    def body() -> int:
        args, config = flags.parse(parser, argv)
        from ghostnet_jax.study.lr_find import LRFindOptions, run_lr_find
        from ghostnet_jax.training.launch import check_config, default_workdir

        options = LRFindOptions(
            min_lr=args.min_lr,
            max_lr=args.max_lr,
            num_steps=args.num_steps,
            smoothing=args.smoothing,
        )
        problem = options.problem()
        if problem:
            raise errors.UsageError(problem)
        check_config(config)
        workdir = args.workdir or default_workdir(args.config, 'lr_find')
        result = run_lr_find(config, workdir, options)
        s = result['suggestion']
        print(f'{result["steps"]} steps, {result["stop_reason"]}.')
        print(f'Written: {workdir}/lr_find.json, {workdir}/lr_find.png')
        if s['learning_rate'] is None:
            print('No suggestion: too few finite losses; lower --min-lr or raise --num-steps.')
            return errors.UNEXPECTED
        print(
            f'Minimum smoothed loss {s["min_smoothed_loss"]:.4f} at lr {s["min_loss_lr"]:.3g}; '
            f'steepest descent at lr {s["steepest"]:.3g}.'
        )
        print(f'Suggested (rule: {s["rule"]}):')
        print(f'  --config.optimizer.learning_rate={s["learning_rate"]:.3g}')
        return errors.OK

    return errors.run_command(PROG, body, argv)


if __name__ == '__main__':
    from ghostnet_jax.cli.process import prepare_process, setup_logging

    prepare_process()
    setup_logging()
    sys.exit(main())
