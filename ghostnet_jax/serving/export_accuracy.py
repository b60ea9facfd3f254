"""What an export costs: its accuracy in its own runtime, beside the float model's.

After writing, the export is run in its own runtime (jax.export, ONNX Runtime, the LiteRT
interpreter) on the run's evaluation split (the test split when the run has one, else its
validation split), decoded as the trainer decoded it. Reported: the export's top-1
accuracy, `predict`'s (the float model, same images, same process) and results.json's for
that split, the change in percentage points, the share of images whose top-1 class the
export and `predict` agree on, and the file size. An export whose accuracy falls more than
`max_drop` points below predict's fails (AccuracyLossError, exit 1) with the options to
try.

Calibration images for int8 come from the run's training split: `n` rows drawn with a
fixed seed, so the same command writes the same file.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ghostnet_jax.data import ArraySplit, open_lazy_split
from ghostnet_jax.data.errors import DataError
from ghostnet_jax.serving.exporters import ExportMismatchError, read_metadata, run_in_batches
from ghostnet_jax.serving.loading import TrainedModel
from ghostnet_jax.serving.quantization import Quantization

DEFAULT_MAX_DROP = 1.0  # percentage points of top-1 accuracy
CALIBRATION_SEED = 0
RECORD_COLUMNS = (
    'model',
    'input',
    'format',
    'quantize',
    'float_depthwise',
    'batch',
    'file_size_mb',
    'split',
    'images',
    'top1',
    'float_top1',
    'results_json_top1',
    'top1_change_pt',
    'agreement',
    'max_abs_diff',
    'latency_ms_run1',
    'latency_ms_run2',
    'hardware',
    'date',
    'command',
    'notes',
)


class AccuracyLossError(ExportMismatchError):
    """The export, in its own runtime, loses more top-1 accuracy than allowed."""


def run_workdir(path: str | os.PathLike) -> Path | None:
    """The training workdir behind a `load` path (a workdir, its checkpoints/ or one step
    directory of it), or None (a converted model, a step directory copied out)."""
    path = Path(path).absolute()
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / 'config.json').is_file() and (candidate / 'checkpoints').is_dir():
            return candidate
    return None


def _run_config(workdir: Path) -> dict[str, Any]:
    return json.loads((workdir / 'config.json').read_text())


def _open(workdir: Path, split: str, model: TrainedModel):
    data = _run_config(workdir)['data']
    return open_lazy_split(
        data['source'],
        split,
        data_dir=data.get('data_dir'),
        cache_dir=data.get('cache_dir'),
        image_size=model.spec.resize,
        skip_corrupt_images=data.get('skip_corrupt_images', False),
    )


def _as_model_input(model: TrainedModel, split: ArraySplit) -> ArraySplit:
    """The split's images as predict takes them (a run trained on crops of larger images
    gets predict's own resize and crop)."""
    if split.image_shape == model.image_shape:
        return split
    images = np.stack([model.prepare(image) for image in split.images])
    return ArraySplit(images, split.labels, split.class_names, split.name)


def evaluation_split(
    workdir: Path, model: TrainedModel, max_images: int | None = None
) -> tuple[str, ArraySplit]:
    """('test' or 'val', the split): the run's test split when it has one, else its
    validation split, its first `max_images` rows when given."""
    data = _run_config(workdir)['data']
    role = 'test' if data.get('test_split') else 'val'
    spec = data['test_split'] if role == 'test' else data.get('val_split')
    if not spec:
        raise DataError(
            f'The run at {workdir} has neither a test nor a validation split, so the export '
            'cannot be evaluated: pass --no-evaluate (and, for int8, --calibration-from FOLDER).'
        )
    lazy = _open(workdir, spec, model)
    n = len(lazy) if max_images is None else min(max_images, len(lazy))
    split = lazy.read_rows([(0, n)])
    if tuple(split.class_names) != tuple(model.class_names):
        raise DataError(
            f'{split.name} has classes {list(split.class_names)}, the model '
            f"{list(model.class_names)}: the run's data changed since it trained."
        )
    return role, _as_model_input(model, split)


def calibration_images(
    workdir: Path, model: TrainedModel, n: int, seed: int = CALIBRATION_SEED
) -> tuple[np.ndarray, str]:
    """(n uint8 images, where they came from): rows of the run's training split drawn
    without replacement with `seed` (every row when the split has fewer)."""
    if n < 1:
        raise ValueError(f'the number of calibration images must be at least 1, got {n}.')
    spec = _run_config(workdir)['data']['train_split']
    lazy = _open(workdir, spec, model)
    rows = np.arange(len(lazy))
    if n < len(lazy):
        rows = np.sort(np.random.default_rng(seed).choice(len(lazy), n, replace=False))
    split = _as_model_input(model, lazy.read_rows([(int(r), int(r) + 1) for r in rows]))
    return split.images, f'{len(rows)} images of {lazy.name} (seed {seed})'


def folder_calibration_images(
    model: TrainedModel, files: Sequence[Path], n: int
) -> tuple[np.ndarray, str]:
    """(up to n images from `files`, decoded as predict decodes them, description)."""
    chosen = list(files)[:n]
    return model.load_images(chosen), f'{len(chosen)} image files'


def top1(probabilities: np.ndarray) -> np.ndarray:
    return np.argmax(probabilities, axis=-1)


def evaluate_export(
    model: TrainedModel,
    fmt: str,
    path: str | os.PathLike,
    role: str,
    split: ArraySplit,
    results_accuracy: float | None = None,
) -> dict[str, Any]:
    """The export at `path` and predict on `split` ('val' or 'test' of the run): top-1 of
    each, their agreement, the change in points and the file size."""
    got = run_in_batches(fmt, path, split.images)
    want = model.predict(split.images)
    labels = split.labels
    export_top1 = float(np.mean(top1(got) == labels))
    float_top1 = float(np.mean(top1(want) == labels))
    return {
        'split': role,
        'split_name': split.name,
        'images': len(split),
        'top1': export_top1,
        'float_top1': float_top1,
        'results_json_top1': results_accuracy,
        'top1_change_pt': round(100 * (export_top1 - float_top1), 4),
        'agreement': float(np.mean(top1(got) == top1(want))),
        'max_abs_diff': float(np.max(np.abs(got.astype(np.float32) - want))),
        'file_size_mb': Path(path).stat().st_size / 1e6,
    }


def results_accuracy(workdir: Path, role: str, step: int | None) -> float | None:
    """results.json's accuracy on `role` when it evaluated the same step, else None."""
    results_path = workdir / 'results.json'
    if not results_path.is_file():
        return None
    results = json.loads(results_path.read_text())
    if results.get('step') != step or not results.get(role):
        return None
    return float(results[role]['accuracy'])


def check_accuracy_drop(
    report: dict[str, Any], max_drop: float, fmt: str, quant: Quantization
) -> None:
    """AccuracyLossError when the export lost more than `max_drop` points of top-1."""
    drop = -report['top1_change_pt']
    if drop <= max_drop:
        return
    tries = []
    if quant.mode == 'int8' and not quant.float_depthwise:
        tries.append(
            "--float-depthwise first (it keeps the Ghost modules' cheap depthwise convolutions "
            'in float, the layers int8 hurts most)'
        )
    if quant.mode == 'int8':
        tries.append(
            f'more calibration images (--calibration-images, now {report["calibration_images"]})'
        )
        tries.append('--quantize fp16')
    tries.append('--quantize none')
    raise AccuracyLossError(
        f'the {quant.mode} {fmt} export scores {100 * report["top1"]:.2f}% top-1 on the '
        f'{report["split"]} split ({report["images"]} images) against '
        f'{100 * report["float_top1"]:.2f}% for the float model: {drop:.2f} points lost, '
        f'more than --max-accuracy-drop {max_drop:g}. Try {", then ".join(tries)}. '
        'The file was kept for inspection.'
    )


def append_record(csv_path: str | os.PathLike, row: dict[str, Any]) -> Path:
    """Appends `row` (RECORD_COLUMNS; missing ones empty) to `csv_path`, writing the header
    when the file is new."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    new = not csv_path.exists() or csv_path.stat().st_size == 0
    with csv_path.open('a', newline='') as f:
        writer = csv.DictWriter(f, RECORD_COLUMNS, extrasaction='ignore')
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, '') for k in RECORD_COLUMNS})
    return csv_path


def record_row(
    model: TrainedModel, export_path: Path, report: dict[str, Any], hardware: str, command: str
) -> dict[str, Any]:
    """The exports.csv row of one evaluated export."""
    meta = read_metadata(export_path)
    quant = meta.get('quantization', {'mode': 'none'})
    h, w, _ = model.image_shape

    def pct(x: float | None) -> str:
        return '' if x is None else f'{100 * x:.2f}'

    return {
        'model': model.spec.model_name,
        'input': f'{h}x{w}',
        'format': meta['format'],
        'quantize': quant['mode'],
        'float_depthwise': quant.get('float_depthwise', ''),
        'batch': meta['input']['shape'][0] or 'dynamic',
        'file_size_mb': f'{report["file_size_mb"]:.3f}',
        'split': f'{report["split"]} ({report["split_name"]})',
        'images': report['images'],
        'top1': pct(report['top1']),
        'float_top1': pct(report['float_top1']),
        'results_json_top1': pct(report['results_json_top1']),
        'top1_change_pt': f'{report["top1_change_pt"]:+.2f}',
        'agreement': pct(report['agreement']),
        'max_abs_diff': f'{report["max_abs_diff"]:.2g}',
        'hardware': hardware,
        'date': datetime.date.today().isoformat(),
        'command': command,
        'notes': f'step {model.step}; source {model.source}',
    }
