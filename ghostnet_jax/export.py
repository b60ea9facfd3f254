"""Export a trained run (or converted ImageNet weights) for serving without this package.

    python -m ghostnet_jax.export --workdir DIR --format stablehlo|onnx|tflite --out PATH
        [--batch-size N|dynamic] [--checkpoint best|latest|STEP] [--conv-impl native|shifted]
        [--check-images FOLDER_OR_IMAGE...] [--no-check] [--verbose]

The export computes what `ghostnet_jax.predict` computes: uint8 NHWC images at the model's
input size in (normalization, and a run's eval_flip, inside the graph), class
probabilities out. PATH.json next to it records the input, the class names and the
host-side resize the caller must apply. After writing, the export is run in its own
runtime (jax.export / onnxruntime / the LiteRT interpreter) and compared with predict on
images from --check-images, or on generated photo-like images; the max abs difference is
printed and must be <= 1e-4.

Formats and their extras: stablehlo (none), onnx (pip install 'ghostnet_jax[export-onnx]'),
tflite (pip install 'ghostnet_jax[export-tflite]').
Exit codes: 0 ok, 1 unexpected or check failed, 2 usage / missing extra, 4 data,
5 checkpoint.
"""

from __future__ import annotations

import logging
import sys

from ghostnet_jax.cli import errors, flags

PROG = 'python -m ghostnet_jax.export'
FORMATS = ('stablehlo', 'onnx', 'tflite')


def parse_batch_size(text: str) -> int | None | str:
    if text in ('default', 'dynamic'):
        return None if text == 'dynamic' else 'default'
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise errors.UsageError(f"--batch-size must be a positive number or 'dynamic', got {text!r}.")


def main(argv: list[str] | None = None) -> int:
    parser = flags.command_parser(PROG, __doc__)
    flags.add(
        parser,
        '--workdir',
        required=True,
        help='training workdir, checkpoints/ dir, step dir or convert output',
    )
    flags.add(parser, '--format', required=True, choices=FORMATS)
    flags.add(parser, '--out', required=True, help='file to write (PATH.json is written too)')
    flags.add(
        parser,
        '--batch-size',
        default='default',
        help="N or 'dynamic'; default: dynamic for stablehlo and onnx, 1 for tflite "
        '(the LiteRT interpreter runs dynamic-batch graphs 15-30x slower)',
    )
    flags.add(parser, '--checkpoint', default='best', help='best (default), latest or a step')
    flags.add(
        parser,
        '--conv-impl',
        default=None,
        choices=('native', 'shifted'),
        help='convolution formulation in the exported graph (same weights); '
        'default: shifted for stablehlo (fast in XLA on CPU), native otherwise',
    )
    flags.add(
        parser,
        '--check-images',
        default=None,
        metavar='FOLDER_OR_IMAGE',
        nargs='+',
        help='images to compare the export with predict on (default: generated)',
    )
    flags.add(parser, '--no-check', action='store_true', help='skip the round-trip check')
    args, _ = flags.parse(parser, argv)
    if not errors.verbose(argv if argv is not None else sys.argv[1:]):
        logging.getLogger('absl').setLevel(logging.ERROR)

    def body() -> int:
        batch_size = parse_batch_size(args.batch_size)
        which = flags.checkpoint(args.checkpoint)
        from ghostnet_jax.serving.classify import find_images
        from ghostnet_jax.serving.exporters import TOLERANCE, export_and_check

        check_files = find_images(args.check_images) if args.check_images else None
        done = export_and_check(
            args.workdir,
            args.format,
            args.out,
            batch_size,
            which,
            args.conv_impl,
            check_files,
            check=not args.no_check,
        )
        shape = ', '.join(map(str, done['image_shape']))
        print(
            f'wrote {done["path"]} ({done["bytes"] / 1e6:.2f} MB, {args.format}, batch '
            f'{done["batch_size"] or "dynamic"}, input uint8 (N, {shape})) and '
            f'{done["metadata"]}'
        )
        if done['max_abs_difference'] is not None:
            print(
                f'check: {args.format} in its own runtime vs predict on {done["checked_on"]}: '
                f'max abs difference {done["max_abs_difference"]:.3g} (tolerance {TOLERANCE:g})'
            )
        return errors.OK

    return errors.run_command(PROG, body, argv)


if __name__ == '__main__':
    sys.exit(main())
