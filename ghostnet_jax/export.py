"""Export a trained run (or converted ImageNet weights) for serving without this package.

    python -m ghostnet_jax.export --workdir DIR --format stablehlo|onnx|tflite --out PATH
        [--batch-size N|dynamic] [--checkpoint best|latest|STEP] [--conv-impl native|shifted]
        [--check-images FOLDER_OR_IMAGE...] [--no-check] [--verbose]
        [--quantize none|fp16|int8] [--calibration-images N] [--calibration-from FOLDER...]
        [--float-depthwise] [--max-accuracy-drop POINTS] [--no-evaluate] [--eval-images N]
        [--record CSV]

The export computes what `ghostnet_jax.predict` computes: uint8 NHWC images at the model's
input size in (normalization, and a run's eval_flip, inside the graph), class
probabilities out. PATH.json next to it records the input, the class names and the
host-side resize the caller must apply. After writing, the export is run in its own
runtime (jax.export / onnxruntime / the LiteRT interpreter) and compared with predict on
images from --check-images, or on generated photo-like images; the max abs difference is
printed and, for a float export, must be <= 1e-4.

Quantization (--quantize): fp16 (TFLite: float16 weights) or int8 (TFLite and ONNX:
post-training, per-channel int8 weights, calibrated on --calibration-images drawn with a
fixed seed from the run's training split), with the converters' own quantizers.
--float-depthwise keeps the depthwise convolutions (GhostNet's cheap operations) in float.
StableHLO stays float32.

What it costs: for a training run, the export is then evaluated in its own runtime on the
run's test split (validation split when it has none) beside predict and results.json:
top-1, its change, agreement with predict's top-1 and file size are printed, written into
PATH.json and appended to --record (default: exports.csv beside PATH). A quantized export
losing more than --max-accuracy-drop points (default 1.0) exits 1 naming what to try.

Formats and their extras: stablehlo (none), onnx (pip install 'ghostnet_jax[export-onnx]'),
tflite (pip install 'ghostnet_jax[export-tflite]').
Exit codes: 0 ok, 1 unexpected or check failed, 2 usage / missing extra, 4 data,
5 checkpoint.
"""

from __future__ import annotations

import logging
import shlex
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
    flags.add(
        parser,
        '--quantize',
        default='none',
        choices=('none', 'fp16', 'int8'),
        help='post-training quantization: fp16 (tflite, onnx) or int8 (tflite, onnx), with '
        "the converter's own quantizer",
    )
    flags.add(
        parser,
        '--calibration-images',
        type=int,
        default=200,
        metavar='N',
        help="int8: images drawn (fixed seed) from the run's training split to calibrate on",
    )
    flags.add(
        parser,
        '--calibration-from',
        default=None,
        metavar='FOLDER_OR_IMAGE',
        nargs='+',
        help='int8: calibrate on these image files instead (needed for converted weights)',
    )
    flags.add(
        parser,
        '--float-depthwise',
        action='store_true',
        help="int8: keep the depthwise convolutions (the Ghost modules' cheap operations) in float",
    )
    flags.add(
        parser,
        '--max-accuracy-drop',
        type=float,
        default=1.0,
        metavar='POINTS',
        help='a quantized export losing more top-1 than this (percentage points) fails, exit 1',
    )
    flags.add(
        parser,
        '--no-evaluate',
        action='store_true',
        help="skip evaluating the export on the run's test (or validation) split",
    )
    flags.add(
        parser,
        '--eval-images',
        type=int,
        default=None,
        metavar='N',
        help='evaluate on the first N images of the split (default: all)',
    )
    flags.add(
        parser,
        '--record',
        default=None,
        metavar='CSV',
        help='append the evaluation to this CSV (default: exports.csv beside --out)',
    )
    args, _ = flags.parse(parser, argv)
    if not errors.verbose(argv if argv is not None else sys.argv[1:]):
        logging.getLogger('absl').setLevel(logging.ERROR)

    def body() -> int:
        batch_size = parse_batch_size(args.batch_size)
        which = flags.checkpoint(args.checkpoint)
        if args.calibration_images < 1:
            raise errors.UsageError(
                f'--calibration-images must be at least 1, got {args.calibration_images}.'
            )
        if args.eval_images is not None and args.eval_images < 1:
            raise errors.UsageError(f'--eval-images must be at least 1, got {args.eval_images}.')
        from ghostnet_jax.serving.classify import find_images
        from ghostnet_jax.serving.export_job import ExportOptions, export_and_check, summary
        from ghostnet_jax.training.environment import cpu_info

        cpu = cpu_info()
        options = ExportOptions(
            batch_size=batch_size,
            which=which,
            conv_impl=args.conv_impl,
            check_files=find_images(args.check_images) if args.check_images else None,
            check=not args.no_check,
            quantize=args.quantize,
            calibration_images=args.calibration_images,
            calibration_from=find_images(args.calibration_from) if args.calibration_from else None,
            float_depthwise=args.float_depthwise,
            evaluate=not args.no_evaluate,
            eval_images=args.eval_images,
            max_accuracy_drop=args.max_accuracy_drop,
            record=args.record,
            command=shlex.join(['python', '-m', 'ghostnet_jax.export', *(argv or sys.argv[1:])]),
            hardware=f'{cpu["model"]}, {cpu["logical_cores"]} cores',
        )
        print(summary(args.format, export_and_check(args.workdir, args.format, args.out, options)))
        return errors.OK

    return errors.run_command(PROG, body, argv)


if __name__ == '__main__':
    sys.exit(main())
