"""Inference speed of a model in every runtime it exports to (`benchmark --inference`).

For each model: latency of one image (median and p90 of many warm calls) and throughput at
batch 32 (images/s from the median call), in each runtime available here:

    jax          the jitted serving function on XLA:CPU (what `predict` runs)
    stablehlo    the StableHLO export, reloaded with jax.export
    onnx         ONNX Runtime, float32 (dynamic batch)
    onnx-int8    ONNX Runtime, int8 QDQ (quantize_static, per-channel weights)
    tflite       the LiteRT interpreter, float32 (one fixed-batch file per batch size)
    tflite-int8  the LiteRT interpreter, full-integer int8

Runtimes are alternated: every round times each runtime in turn, so a machine that slows
down during the run slows all of them alike. Weights are random (speed does not depend on
their values); int8 is calibrated on generated photo-like images. Threads: ONNX Runtime
and LiteRT get `threads` explicitly; XLA:CPU uses its own pool over the process's CPUs.
MACs and parameters come from the layer table (`python -m ghostnet_jax.summary`).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ghostnet_jax.models import create_model
from ghostnet_jax.models.layer_table import layer_table
from ghostnet_jax.optional import MissingExtraError
from ghostnet_jax.serving import exporters
from ghostnet_jax.serving.loading import TrainedModel, probabilities
from ghostnet_jax.serving.preprocessing import Preprocessing
from ghostnet_jax.serving.quantization import Quantization
from ghostnet_jax.training.model_spec import ModelSpec

RUNTIMES = ('jax', 'stablehlo', 'onnx', 'onnx-int8', 'tflite', 'tflite-int8')
# (model, input side): GhostNet v1/v2/v3 (V3 folded) at 0.5x and 1.0x and MobileNetV3-Large
# and -Small 1.0, at 224 (ImageNet strides) and at 32 (CIFAR strides, 10 classes).
DEFAULT_MODELS = (
    ('ghostnet_050', 224),
    ('ghostnet_100', 224),
    ('ghostnetv2_050', 224),
    ('ghostnetv2_100', 224),
    ('ghostnetv3_050', 224),
    ('ghostnetv3_100', 224),
    ('mobilenetv3_small_100', 224),
    ('mobilenetv3_large_100', 224),
    ('ghostnet_cifar_050', 32),
    ('ghostnet_cifar_100', 32),
    ('ghostnetv2_cifar_050', 32),
    ('ghostnetv2_cifar_100', 32),
    ('ghostnetv3_cifar_050', 32),
    ('ghostnetv3_cifar_100', 32),
    ('mobilenetv3_small_cifar_100', 32),
    ('mobilenetv3_large_cifar_100', 32),
)
THROUGHPUT_BATCH = 32
CALIBRATION_IMAGES = 32
CSV_COLUMNS = (
    'model',
    'input',
    'runtime',
    'threads',
    'latency_ms_median',
    'latency_ms_p90',
    'latency_runs',
    'throughput_img_s',
    'throughput_runs',
    'macs_m',
    'params_m',
    'file_size_mb',
    'cpu',
    'date',
    'command',
    'notes',
)


@dataclasses.dataclass
class Runner:
    """One runtime's callables for batch 1 and the throughput batch, and its file size."""

    runtime: str
    one: Callable[[np.ndarray], Any]
    batch: Callable[[np.ndarray], Any]
    file_size_mb: float | None = None
    latency_s: list[float] = dataclasses.field(default_factory=list)
    batch_s: list[float] = dataclasses.field(default_factory=list)


def random_trained_model(name: str, size: int, seed: int = 0) -> TrainedModel:
    """`name` with random weights (normal, scaled by fan-in; BN variance 1) as a
    TrainedModel, so that every exporter takes it; a GhostNetV3 in its folded form."""
    overrides = {'reparameterized': True} if name.startswith('ghostnetv3') else {}
    model = create_model(name, **overrides)
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        key = jax.tree_util.keystr(path)
        if 'var' in key or 'scale' in key:
            return np.ones(leaf.shape, leaf.dtype)
        if 'mean' in key or key.endswith("'bias']"):
            return np.zeros(leaf.shape, leaf.dtype)
        fan_in = max(1, int(np.prod(leaf.shape[:-1])))
        return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(fill, abstract)
    num_classes = model.num_classes
    spec = ModelSpec(
        model_name=name,
        num_classes=num_classes,
        class_names=tuple(f'class_{i}' for i in range(num_classes)),
        image_shape=(size, size, 3),
        mean=(124.0, 116.0, 104.0),
        std=(58.0, 57.0, 57.0),
        model_overrides=overrides,
    )
    return TrainedModel(
        spec, Preprocessing.for_run(spec), model, variables, source=f'random {name}', step=None
    )


def _onnx_runner(path: Path, threads: int) -> Callable[[np.ndarray], Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    return lambda x: session.run(None, {exporters.INPUT_NAME: x})[0]


def _tflite_runner(path: Path, threads: int) -> Callable[[np.ndarray], Any]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]['index']
    out = interpreter.get_output_details()[0]['index']

    def run(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return run


def build_runners(
    model: TrainedModel, runtimes: Sequence[str], threads: int, workdir: Path
) -> tuple[list[Runner], list[str]]:
    """(the runners of `runtimes` that can be built here, notes on those that cannot)."""
    runners, notes = [], []
    calibration = exporters.sample_images(CALIBRATION_IMAGES, model.image_shape, seed=7)
    int8 = Quantization('int8', calibration, calibration_source='generated images')
    for runtime in runtimes:
        try:
            runners.append(_build(model, runtime, threads, workdir, int8))
        except MissingExtraError as e:
            notes.append(f'{runtime}: skipped ({e})')
    return runners, notes


def _size(path: Path) -> float:
    return path.stat().st_size / 1e6


def _build(
    model: TrainedModel, runtime: str, threads: int, workdir: Path, int8: Quantization
) -> Runner:
    if runtime == 'jax':  # predict's program: the weights an argument, not constants
        fn = jax.jit(
            lambda variables, x: probabilities(model.model, model.preprocessing, variables, x)
        )
        run = lambda x: fn(model.variables, x).block_until_ready()  # noqa: E731
        return Runner(runtime, run, run)
    if runtime == 'stablehlo':
        path = exporters.export_model(model, 'stablehlo', workdir / 'm.stablehlo', None)
        exported = jax.export.deserialize(bytearray(path.read_bytes()))
        run = lambda x: exported.call(x).block_until_ready()  # noqa: E731
        return Runner(runtime, run, run, _size(path))
    quant = int8 if runtime.endswith('-int8') else None
    fmt = runtime.removesuffix('-int8')
    if fmt == 'onnx':
        path = exporters.export_model(model, 'onnx', workdir / f'{runtime}.onnx', None, None, quant)
        run = _onnx_runner(path, threads)
        return Runner(runtime, run, run, _size(path))
    # TFLite: one fixed-batch file per batch size (dynamic-batch graphs run far slower).
    one = exporters.export_model(model, 'tflite', workdir / f'{runtime}_1.tflite', 1, None, quant)
    many = exporters.export_model(
        model,
        'tflite',
        workdir / f'{runtime}_{THROUGHPUT_BATCH}.tflite',
        THROUGHPUT_BATCH,
        None,
        quant,
    )
    return Runner(runtime, _tflite_runner(one, threads), _tflite_runner(many, threads), _size(one))


def _time(fn: Callable[[np.ndarray], Any], x: np.ndarray, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - start)
    return out


def measure(
    runners: Sequence[Runner],
    image_shape: tuple[int, int, int],
    latency_runs: int,
    throughput_runs: int,
    rounds: int,
    warmup: int = 3,
) -> None:
    """Fills each runner's latency_s and batch_s: `rounds` rounds, each timing every runner
    in turn (latency_runs / rounds single images, throughput_runs / rounds batches)."""
    one = exporters.sample_images(1, image_shape, seed=11)
    batch = exporters.sample_images(THROUGHPUT_BATCH, image_shape, seed=12)
    for r in runners:  # warm: compiled, planned, caches filled
        _time(r.one, one, warmup)
        _time(r.batch, batch, max(1, warmup // 2))
    per_round_one = max(1, latency_runs // rounds)
    per_round_batch = max(1, throughput_runs // rounds)
    for _ in range(rounds):
        for r in runners:
            r.latency_s += _time(r.one, one, per_round_one)
            r.batch_s += _time(r.batch, batch, per_round_batch)


def p90(values: Sequence[float]) -> float:
    return float(np.percentile(values, 90))


def benchmark_model(
    name: str,
    size: int,
    runtimes: Sequence[str],
    threads: int,
    latency_runs: int,
    throughput_runs: int,
    rounds: int,
    cpu: str,
    command: str,
) -> list[dict[str, Any]]:
    """The CSV rows (CSV_COLUMNS) of one model at `size` x `size` in every runtime."""
    model = random_trained_model(name, size)
    table = layer_table(model.model, size)
    with tempfile.TemporaryDirectory() as tmp:
        runners, notes = build_runners(model, runtimes, threads, Path(tmp))
        measure(runners, model.image_shape, latency_runs, throughput_runs, rounds)
    rows = []
    for r in runners:
        rows.append(
            {
                'model': name,
                'input': f'{size}x{size}',
                'runtime': r.runtime,
                'threads': 'XLA pool' if r.runtime in ('jax', 'stablehlo') else threads,
                'latency_ms_median': round(1000 * statistics.median(r.latency_s), 3),
                'latency_ms_p90': round(1000 * p90(r.latency_s), 3),
                'latency_runs': len(r.latency_s),
                'throughput_img_s': round(THROUGHPUT_BATCH / statistics.median(r.batch_s), 1),
                'throughput_runs': len(r.batch_s),
                'macs_m': round(table.macs / 1e6, 2),
                'params_m': round(table.trainable_params / 1e6, 3),
                'file_size_mb': '' if r.file_size_mb is None else round(r.file_size_mb, 2),
                'cpu': cpu,
                'date': datetime.date.today().isoformat(),
                'command': command,
                'notes': '; '.join(notes),
            }
        )
    return rows


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of the rows, one line per (model, input, runtime)."""
    lines = [
        f'{"model":<30}{"input":>8}  {"runtime":<12}{"p50 ms":>9}{"p90 ms":>9}{"img/s@32":>10}'
        f'{"MMACs":>9}{"Mparams":>9}{"MB":>7}'
    ]
    for r in rows:
        lines.append(
            f'{r["model"]:<30}{r["input"]:>8}  {r["runtime"]:<12}{r["latency_ms_median"]:>9.2f}'
            f'{r["latency_ms_p90"]:>9.2f}{r["throughput_img_s"]:>10.1f}{r["macs_m"]:>9.1f}'
            f'{r["params_m"]:>9.2f}{r["file_size_mb"] if r["file_size_mb"] != "" else "-":>7}'
        )
    return '\n'.join(lines)


def append_rows(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Appends rows (CSV_COLUMNS) to the CSV at `path`, with a header when it is new."""
    import csv

    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    with path.open('a', newline='') as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
