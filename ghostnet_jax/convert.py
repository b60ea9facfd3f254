"""Import PyTorch GhostNet, GhostNetV2 or GhostNetV3 weights (timm or the official huawei-noah
code):

    python -m ghostnet_jax.convert --checkpoint ghostnet.pth --model ghostnet_100 --out DIR
        [--num-classes N]

Writes an Orbax checkpoint that `ghostnet_jax.load`, predict, export and the trainer's
`--config.init_from=DIR` read (layout: ghostnet_jax/training/pretrained.py). `.safetensors`
files need no PyTorch; `.pth` files need the torch extra and load with
`torch.load(weights_only=True)`: a file that needs full unpickling is refused. Every
missing, unexpected or misshapen key is reported. A GhostNetV3 checkpoint is read in its
training form (with its branches, as timm and the official code save it); `load` folds it.
Exit codes: docs/reliability.md.
"""

from __future__ import annotations

import sys

from ghostnet_jax.cli import errors, flags

PROG = 'python -m ghostnet_jax.convert'
# The registry's GhostNets (not the test-sized *_tiny), listed here so that --help needs no
# JAX import; tests/test_convert.py checks the list against the registry.
GHOSTNETS = tuple(
    f'ghostnet{version}_{cifar}{width}'
    for version, widths in (
        ('', ('050', '100', '130')),
        ('v2', ('050', '100', '130', '160')),
        ('v3', ('050', '100', '130', '160')),
    )
    for cifar in ('', 'cifar_')
    for width in widths
)


def main(argv: list[str] | None = None) -> int:
    parser = flags.command_parser(PROG, __doc__)
    flags.add(
        parser,
        '--checkpoint',
        required=True,
        help='.pth/.pt (needs torch) or .safetensors file with a state_dict',
    )
    flags.add(parser, '--model', required=True, choices=GHOSTNETS)
    flags.add(parser, '--out', required=True, help='output directory (must not exist or be empty)')
    flags.add(
        parser,
        '--num-classes',
        type=int,
        default=None,
        help='default: inferred from classifier.weight',
    )
    args, _ = flags.parse(parser, argv)

    def body() -> int:
        from ghostnet_jax.serving.converted import convert_checkpoint
        from ghostnet_jax.training.pretrained import INFO_FILE, converted_info

        out = convert_checkpoint(args.checkpoint, args.model, args.out, args.num_classes)
        info = converted_info(out)
        print(f'Wrote {info["model"]} ({info["num_classes"]} classes) to {out}')
        if info.get('metadata_guessed'):
            print(
                'note: not an ImageNet-1k head, so class names (class_0, ...) and the input '
                'normalization (ImageNet statistics) recorded for predict/export are '
                f'placeholders; edit {out / INFO_FILE} if you know them.',
                file=sys.stderr,
            )
        return errors.OK

    return errors.run_command(PROG, body, argv)


if __name__ == '__main__':
    sys.exit(main())
