"""Sanity checks before a long run:

    python -m ghostnet_jax.sanity [--config configs/NAME.py] [--workdir DIR]
        [--config.FIELD=VALUE ...] [--sample-size N] [--max-steps N] [--shuffle-labels]

Checks the initial loss against ln(num_classes), overfits a small fixed sample (one batch
of the config's images, no augmentation, dropout or weight decay, Adam at a constant rate;
sized to the model unless --sample-size is given) and flags stages whose gradient
vanishes or explodes at init. Writes WORKDIR/sanity.json and WORKDIR/sanity_overfit.png;
exits 1 when a check fails. --shuffle-labels is a control: it breaks the labels on
purpose and must fail the overfit check.
"""

from __future__ import annotations

import sys

from ghostnet_jax.cli import errors, flags

PROG = 'python -m ghostnet_jax.sanity'


def main(argv: list[str] | None = None) -> int:
    parser = flags.command_parser(PROG, __doc__, config=True)
    flags.add(
        parser, '--workdir', default=None, help='output folder; default runs/<config>-sanity-<time>'
    )
    flags.add(
        parser,
        '--sample-size',
        type=int,
        default=None,
        help='images in the fixed overfit sample (default: sized to the model)',
    )
    flags.add(
        parser,
        '--max-steps',
        type=int,
        default=None,
        help='overfit budget in steps (default: sized to the sample)',
    )
    flags.add(
        parser,
        '--target-accuracy',
        type=float,
        default=0.99,
        help='training accuracy counted as ~100%%',
    )
    flags.add(
        parser,
        '--init-loss-tolerance',
        type=float,
        default=0.25,
        help='allowed |loss - ln C| / ln C at init',
    )
    flags.add(
        parser,
        '--shuffle-labels',
        action='store_true',
        help='control: permute the sample labels (the overfit check must then fail)',
    )

    def body() -> int:
        args, config = flags.parse(parser, argv)
        from ghostnet_jax.study.sanity import SanityOptions, run_sanity, summary_text
        from ghostnet_jax.training.launch import check_config, default_workdir

        check_config(config)
        workdir = args.workdir or default_workdir(args.config, 'sanity')
        report = run_sanity(
            config,
            workdir,
            SanityOptions(
                sample_size=args.sample_size,
                max_steps=args.max_steps,
                target_accuracy=args.target_accuracy,
                init_loss_tolerance=args.init_loss_tolerance,
                shuffle_labels=args.shuffle_labels,
            ),
        )
        print(summary_text(report))
        print(f'Written: {workdir}/sanity.json, {workdir}/sanity_overfit.png')
        return errors.OK if report['passed'] else errors.UNEXPECTED

    return errors.run_command(PROG, body, argv)


if __name__ == '__main__':
    from ghostnet_jax.cli.process import prepare_process, setup_logging

    prepare_process()
    setup_logging()
    sys.exit(main())
