"""The export command's work: load, (quantize,) write, check against predict, evaluate, record.

    report = export_and_check('runs/cifar10', 'tflite', 'model.tflite',
                              ExportOptions(quantize='int8', float_depthwise=True))

Steps, each in the format's own runtime:
1. the float or quantized export is written with its PATH.json metadata;
2. a float export is compared with predict on a few images (max abs difference <= TOLERANCE,
   else ExportMismatchError); a quantized one is not expected to match to 1e-4, and is
   compared on the images for the record only;
3. with a training run behind the model, the export is evaluated on the run's test split
   (validation split when it has none) beside predict and results.json; the figures go
   into PATH.json and a row of the `record` CSV; a loss of more than `max_accuracy_drop`
   points of top-1 raises AccuracyLossError (exit 1 in the command).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

from ghostnet_jax.serving import export_accuracy as accuracy
from ghostnet_jax.serving.exporters import (
    TOLERANCE,
    ExportMismatchError,
    compare_with_predict,
    export_model,
    metadata_path,
    read_metadata,
    sample_images,
)
from ghostnet_jax.serving.loading import TrainedModel, load
from ghostnet_jax.serving.quantization import (
    DEFAULT_CALIBRATION_IMAGES,
    Quantization,
    QuantizationOptionError,
    check_request,
)

CHECK_IMAGES = 8


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Everything the export command can be asked, with its defaults."""

    batch_size: int | None | str = 'default'
    which: str | int = 'best'
    conv_impl: str | None = None
    check_files: Sequence[Path] | None = None
    check: bool = True
    quantize: str = 'none'
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    calibration_from: Sequence[Path] | None = None  # image files instead of the run's data
    float_depthwise: bool = False
    evaluate: bool = True
    eval_images: int | None = None  # the first N of the evaluation split (default: all)
    max_accuracy_drop: float = accuracy.DEFAULT_MAX_DROP
    record: str | os.PathLike | None = None  # CSV to append the evaluation to
    command: str = ''  # the command line, for the record
    hardware: str = ''  # the CPU, for the record


def _quantization(
    model: TrainedModel, workdir: Path | None, options: ExportOptions
) -> Quantization:
    """The Quantization to export with (int8: its calibration images decoded)."""
    if options.quantize != 'int8':
        return Quantization(options.quantize)
    if options.calibration_from:
        images, source = accuracy.folder_calibration_images(
            model, options.calibration_from, options.calibration_images
        )
    elif workdir is not None:
        images, source = accuracy.calibration_images(workdir, model, options.calibration_images)
    else:
        raise QuantizationOptionError(
            f'{model.source} is not a training run, so int8 has no training split to calibrate '
            'on: pass --calibration-from FOLDER with a few hundred images like those it will '
            'classify.'
        )
    return Quantization(
        'int8', images, calibration_source=source, float_depthwise=options.float_depthwise
    )


def export_and_check(
    path: str | os.PathLike, fmt: str, out: str | os.PathLike, options: ExportOptions
) -> dict[str, Any]:
    """Loads the model at `path` (see `load`), exports it as `options` say, checks and
    evaluates it; returns what was written and measured (see the module docstring)."""
    # Refused before anything is loaded or decoded.
    check_request(fmt, options.quantize, options.float_depthwise)
    if options.max_accuracy_drop < 0:
        raise QuantizationOptionError(
            f'--max-accuracy-drop is in points of top-1 and must be >= 0, got '
            f'{options.max_accuracy_drop:g}.'
        )
    model = load(path, options.which)
    workdir = accuracy.run_workdir(path)
    quant = _quantization(model, workdir, options)
    written = export_model(model, fmt, out, options.batch_size, options.conv_impl, quant)
    report: dict[str, Any] = {
        'path': written,
        'metadata': metadata_path(written),
        'bytes': written.stat().st_size,
        'batch_size': read_metadata(written)['input']['shape'][0],
        'image_shape': model.image_shape,
        'quantization': quant.to_json(),
        'max_abs_difference': None,
        'checked_on': None,
        'evaluation': None,
        'evaluation_note': None,
        'record': None,
    }
    if options.check:
        _check_against_predict(model, fmt, written, quant, options.check_files, report)
    if options.evaluate and workdir is None:
        report['evaluation_note'] = (
            f'not evaluated: {model.source} is not a training run, so it has no split to '
            'evaluate on'
        )
    if options.evaluate and workdir is not None:
        role, split = accuracy.evaluation_split(workdir, model, options.eval_images)
        evaluation = accuracy.evaluate_export(
            model,
            fmt,
            written,
            role,
            split,
            accuracy.results_accuracy(workdir, role, model.step),
        )
        evaluation['calibration_images'] = quant.to_json().get('calibration_images')
        evaluation['max_accuracy_drop'] = options.max_accuracy_drop
        report['evaluation'] = evaluation
        meta = read_metadata(written)
        meta['evaluation'] = evaluation
        metadata_path(written).write_text(json.dumps(meta, indent=2) + '\n')
        record = options.record or Path(written).parent / 'exports.csv'
        row = accuracy.record_row(model, written, evaluation, options.hardware, options.command)
        report['record'] = accuracy.append_record(record, row)
        if quant.quantized:
            accuracy.check_accuracy_drop(evaluation, options.max_accuracy_drop, fmt, quant)
    return report


def _check_against_predict(
    model: TrainedModel,
    fmt: str,
    written: Path,
    quant: Quantization,
    check_files: Sequence[Path] | None,
    report: dict[str, Any],
) -> None:
    if check_files:
        images = model.load_images(list(check_files)[:CHECK_IMAGES])
        report['checked_on'] = f'{len(images)} of the given images'
    else:  # 7: not a power of two, so a dynamic batch is really exercised
        images = sample_images(CHECK_IMAGES - 1, model.image_shape)
        report['checked_on'] = f'{len(images)} generated photo-like images'
    diff = compare_with_predict(model, fmt, written, images)
    report['max_abs_difference'] = diff
    if not quant.quantized and not diff <= TOLERANCE:
        raise ExportMismatchError(
            f'{written} differs from predict by {diff:.3g} > '
            f'{TOLERANCE:g}; the file was kept for inspection.'
        )


def summary(fmt: str, report: dict[str, Any]) -> str:
    """What the export command prints: the file, the check and the evaluation."""
    shape = ', '.join(map(str, report['image_shape']))
    mode = report['quantization']['mode']
    lines = [
        f'wrote {report["path"]} ({report["bytes"] / 1e6:.2f} MB, {fmt}'
        f'{"" if mode == "none" else " " + mode}, batch {report["batch_size"] or "dynamic"}, '
        f'input uint8 (N, {shape})) and {report["metadata"]}'
    ]
    if mode == 'int8':
        q = report['quantization']
        lines.append(
            f'int8: per-channel weights, calibrated on {q["calibration_source"]}'
            f'{", depthwise convolutions kept in float" if q["float_depthwise"] else ""}'
        )
    if report['max_abs_difference'] is not None:
        bound = f'tolerance {TOLERANCE:g}' if mode == 'none' else 'quantized: no tolerance'
        lines.append(
            f'check: {fmt} in its own runtime vs predict on {report["checked_on"]}: '
            f'max abs difference {report["max_abs_difference"]:.3g} ({bound})'
        )
    if report['evaluation_note']:
        lines.append(report['evaluation_note'])
    e = report['evaluation']
    if e:
        reference = (
            ''
            if e['results_json_top1'] is None
            else f', results.json {100 * e["results_json_top1"]:.2f}%'
        )
        lines.append(
            f'{e["split"]} split ({e["images"]} images of {e["split_name"]}): {fmt} '
            f'{100 * e["top1"]:.2f}% top-1, float (predict) {100 * e["float_top1"]:.2f}%'
            f'{reference}; change {e["top1_change_pt"]:+.2f} points; top-1 agreement with '
            f'predict {100 * e["agreement"]:.2f}%; recorded in {report["record"]}'
        )
    return '\n'.join(lines)
