"""Export a trained run (or converted ImageNet weights) for serving without this package.

    python -m ghostnet_jax.export --workdir DIR --format stablehlo|onnx|tflite --out PATH
        [--batch-size N|dynamic] [--checkpoint best|latest|STEP] [--check-images FOLDER]
        [--no-check] [--verbose]

The export computes what `ghostnet_jax.predict` computes: uint8 NHWC images at the model's
input size in (normalization inside the graph), class probabilities out. PATH.json next to
it records the input, the class names and the host-side resize the caller must apply.

After writing, the export is loaded back in its own runtime (jax.export / onnxruntime /
the LiteRT interpreter) and compared with predict on images from --check-images, or on
generated photo-like images; the max abs difference is printed and must be <= 1e-4.

Formats and their extras: stablehlo (none), onnx (pip install 'ghostnet_jax[export-onnx]'),
tflite (pip install 'ghostnet_jax[export-tflite]').
Exit codes: 0 ok, 1 unexpected or check failed, 2 usage / missing extra, 4 data,
5 checkpoint.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ghostnet_jax.serving import cli

PROG = 'python -m ghostnet_jax.export'
CHECK_IMAGES = 8


def parse_batch_size(text: str, fmt: str) -> int | None:
    from ghostnet_jax.serving.exporters import DEFAULT_BATCH
    if text == 'default':
        return DEFAULT_BATCH[fmt]
    if text == 'dynamic':
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise cli.UsageError(f"--batch-size must be a positive number or 'dynamic', got {text!r}.")


def build_parser() -> argparse.ArgumentParser:
    from ghostnet_jax.serving.exporters import FORMATS
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', required=True,
                   help='training workdir, checkpoints/ dir, step dir or convert output')
    p.add_argument('--format', required=True, choices=FORMATS)
    p.add_argument('--out', required=True, help='file to write (PATH.json is written too)')
    p.add_argument('--batch-size', default='default',
                   help="N or 'dynamic'; default: dynamic for stablehlo and onnx, 1 for tflite "
                        '(the LiteRT interpreter runs dynamic-batch graphs 15-30x slower)')
    p.add_argument('--checkpoint', default='best', help='best (default), latest or a step')
    p.add_argument('--conv-impl', default=None, choices=('native', 'shifted'),
                   help='convolution formulation in the exported graph (same weights); '
                        'default: shifted for stablehlo (fast in XLA on CPU), native otherwise')
    p.add_argument('--check-images', default=None, metavar='FOLDER_OR_IMAGE', nargs='+',
                   help='images to compare the export with predict on (default: generated)')
    p.add_argument('--no-check', action='store_true', help='skip the round-trip check')
    p.add_argument('--verbose', action='store_true', help='tracebacks for errors')
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = args.verbose or cli.verbose_requested(argv)
    if not verbose:
        logging.getLogger('absl').setLevel(logging.ERROR)

    def body() -> int:
        from ghostnet_jax.predict import find_images, parse_checkpoint
        batch_size = parse_batch_size(args.batch_size, args.format)
        which = parse_checkpoint(args.checkpoint)
        check_files = find_images(args.check_images) if args.check_images else None
        from ghostnet_jax.serving import exporters, load
        model = load(args.workdir, which)
        out = exporters.export_model(model, args.format, args.out, batch_size, args.conv_impl)
        size = out.stat().st_size
        shape = ', '.join(map(str, model.image_shape))
        print(f'wrote {out} ({size / 1e6:.2f} MB, {args.format}, batch '
              f'{batch_size or "dynamic"}, input uint8 (N, {shape})) and '
              f'{exporters.metadata_path(out)}')
        if args.no_check:
            return cli.EXIT_OK
        if check_files:
            images = model.load_images(check_files[:CHECK_IMAGES])
            what = f'{len(images)} of the given images'
        else:   # 7: not a power of two, so a dynamic batch is really exercised
            images = exporters.sample_images(CHECK_IMAGES - 1, model.image_shape)
            what = f'{len(images)} generated photo-like images'
        diff = exporters.compare_with_predict(model, args.format, out, images)
        print(f'check: {args.format} in its own runtime vs predict on {what}: '
              f'max abs difference {diff:.3g} (tolerance {exporters.TOLERANCE:g})')
        if not diff <= exporters.TOLERANCE:
            raise exporters.ExportMismatchError(
                f'{out} differs from predict by {diff:.3g} > {exporters.TOLERANCE:g}; the file '
                'was kept for inspection.')
        return cli.EXIT_OK

    return cli.run(PROG, body, verbose)


if __name__ == '__main__':
    sys.exit(main())
