"""Per-layer summary of a registered model (the original study's layer table, done properly).

    python -m ghostnet_jax.summary --model ghostnet_cifar_100 [--input-size 32]
        [--num-classes 10] [--format text|markdown|csv] [--reparameterized]

One row per layer (path, type, input and output shape, parameters, MACs), then trainable
parameters, BatchNorm buffers and total MACs (convs and dense layers, no biases, BatchNorm,
activations, pooling or upsampling: the convention behind the official 141M of GhostNet
1.0x; docs/serving.md). A GhostNetV3 is shown in its training form (every branch) unless
--reparameterized asks for the folded form that predict and export run.
"""

from __future__ import annotations

import sys

from ghostnet_jax.cli import errors, flags

PROG = 'python -m ghostnet_jax.summary'


def main(argv: list[str] | None = None) -> int:
    from ghostnet_jax.models import list_models

    parser = flags.command_parser(PROG, __doc__)
    flags.add(
        parser,
        '--model',
        required=True,
        choices=list_models(),
        metavar='MODEL',
        help='one of: ' + ', '.join(list_models()),
    )
    flags.add(
        parser,
        '--input-size',
        type=int,
        default=None,
        help='square input side (default: 32 for CIFAR models, 224 otherwise)',
    )
    flags.add(parser, '--num-classes', type=int, default=None)
    flags.add(parser, '--format', choices=('text', 'markdown', 'csv'), default='text')
    flags.add(
        parser,
        '--reparameterized',
        action='store_true',
        help='a GhostNetV3 folded for inference (as predict/export run it)',
    )
    args, _ = flags.parse(parser, argv)

    def body() -> int:
        if args.reparameterized and not args.model.startswith('ghostnetv3'):
            raise errors.UsageError(
                f'--reparameterized folds GhostNetV3 branches; {args.model} '
                'has none (use a ghostnetv3_* model, or drop the flag).'
            )
        from ghostnet_jax.models.layer_table import model_summary

        print(
            model_summary(
                args.model, args.input_size, args.num_classes, args.format, args.reparameterized
            )
        )
        return errors.OK

    return errors.run_command(PROG, body, argv)


if __name__ == '__main__':
    sys.exit(main())
