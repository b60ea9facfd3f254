"""Exports of a TrainedModel that serve without this package, and their round trips.

Every format computes `TrainedModel.predict`'s function: uint8 NHWC images at the model's
image_shape in, the normalization inside the graph, class probabilities (float32) out.
Decoding and resizing files stay with the caller (`Preprocessing`, described in the
metadata file written next to each export).

    stablehlo  jax.export, serialized (`jax.export.deserialize(open(p,'rb').read()).call(x)`);
               lowered for cpu, cuda and tpu; needs only jax to run.
    onnx       jax2onnx, run with onnxruntime.              extra: export-onnx
    tflite     jax2tf + the TensorFlow Lite converter, run with the LiteRT interpreter
               (ai-edge-litert).                            extra: export-tflite

Batch: a fixed size N, or None for a dynamic batch dimension (a symbolic shape in
StableHLO, 'batch' in ONNX, -1 in TFLite's shape signature). Defaults (DEFAULT_BATCH):
dynamic for StableHLO and ONNX, 1 for TFLite, where a dynamic batch keeps shape ops and
broadcasts in the graph that the LiteRT interpreter runs 15-30x slower (one 224x224
ghostnet_100 image: 14-40 ms with batch 1, 380-960 ms dynamic; docs/serving.md has the table).

Convolutions: the same weights and function either way, but the formulation matters to
the runtime. ONNX and TFLite get conv_impl='native' (one convolution op per layer, which
they map to their Conv/DepthwiseConv kernels). StableHLO gets 'shifted' (slices,
multiply-adds and matmuls): XLA's CPU convolutions are slow, 395 ms vs 14.5 ms for one
224x224 ghostnet_100 image measured here. On GPU/TPU, where training uses 'native', the
difference is not measured: pass conv_impl='native' for an export meant for those.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ghostnet_jax.optional import require
from ghostnet_jax.serving.loading import TrainedModel
from ghostnet_jax.serving.quantization import Quantization, onnx_quantize, tflite_convert

FORMATS = ('stablehlo', 'onnx', 'tflite')
SUFFIXES = {'stablehlo': '.stablehlo', 'onnx': '.onnx', 'tflite': '.tflite'}
STABLEHLO_PLATFORMS = ('cpu', 'cuda', 'tpu')
ONNX_OPSET = 18  # onnxruntime >= 1.14 and most other runtimes read it
INPUT_NAME, OUTPUT_NAME = 'images', 'probabilities'
TOLERANCE = 1e-4  # float32 probabilities: max abs difference to predict
DEFAULT_BATCH: dict[str, int | None] = {'stablehlo': None, 'onnx': None, 'tflite': 1}
DEFAULT_CONV_IMPL = {'stablehlo': 'shifted', 'onnx': 'native', 'tflite': 'native'}


class ExportMismatchError(RuntimeError):
    """The exported model, run in its own runtime, does not compute what predict does."""


def metadata_path(out: str | os.PathLike) -> Path:
    """The JSON that describes an export (inputs, classes, preprocessing): PATH.json."""
    return Path(str(out) + '.json')


# ------------------------------------------------------------------------ exporting


def export_model(
    model: TrainedModel,
    fmt: str,
    out: str | os.PathLike,
    batch_size: int | None | str = 'default',
    conv_impl: str | None = None,
    quantization: Quantization | None = None,
) -> Path:
    """Writes `model` as `fmt` to `out` (plus out.json metadata); returns the path.
    `batch_size`: N, None (dynamic) or 'default' (DEFAULT_BATCH); `conv_impl` None: the
    format's default (DEFAULT_CONV_IMPL); `quantization` None: float32 (see
    ghostnet_jax.serving.quantization)."""
    if fmt not in FORMATS:
        raise ValueError(f'format must be one of {FORMATS}, got {fmt!r}')
    quantization = quantization or Quantization()
    quantization.check_format(fmt)
    if batch_size == 'default':
        batch_size = DEFAULT_BATCH[fmt]
    conv_impl = conv_impl or DEFAULT_CONV_IMPL[fmt]
    if batch_size is not None and batch_size < 1:
        raise ValueError(f'batch size must be positive or dynamic, got {batch_size}')
    # The loaded module (a GhostNetV3 already folded), in the format's conv formulation.
    module = model.model.clone(conv_impl=conv_impl)
    fn = model.serving_function(module)
    h, w, c = model.image_shape
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    blob = _EXPORTERS[fmt](fn, batch_size, (h, w, c), quantization)
    out.write_bytes(blob)
    metadata = {
        'format': fmt,
        'file': out.name,
        'input': {
            'name': INPUT_NAME,
            'dtype': 'uint8',
            'layout': 'NHWC',
            'shape': [batch_size if batch_size else None, h, w, c],
        },
        'output': {
            'name': OUTPUT_NAME,
            'dtype': 'float32',
            'shape': [batch_size or None, model.num_classes],
            'meaning': 'class probabilities (softmax)',
        },
        'class_names': list(model.class_names),
        'preprocessing': model.preprocessing.to_json(),
        'preprocessing_text': model.preprocessing.describe(),
        'model_spec': model.spec.to_json(),
        'source': model.source,
        'step': model.step,
        'conv_impl': conv_impl,
        'quantization': quantization.to_json(),
        'export_seconds': round(time.perf_counter() - start, 1),
    }
    if fmt == 'stablehlo':
        metadata['platforms'] = list(STABLEHLO_PLATFORMS)
    metadata_path(out).write_text(json.dumps(metadata, indent=2) + '\n')
    return out


def _export_stablehlo(
    fn: Callable, batch_size: int | None, hwc: tuple[int, int, int], quant: Quantization
) -> bytes:
    shape = (jax.export.symbolic_shape('batch')[0] if batch_size is None else batch_size, *hwc)
    exported = jax.export.export(jax.jit(fn), platforms=STABLEHLO_PLATFORMS)(
        jax.ShapeDtypeStruct(shape, jnp.uint8)
    )
    return bytes(exported.serialize())


def _export_onnx(
    fn: Callable, batch_size: int | None, hwc: tuple[int, int, int], quant: Quantization
) -> bytes:
    jax2onnx = require('jax2onnx', 'export-onnx', 'The ONNX export (jax2onnx)')
    # jax2onnx's IR serializer warns about every shape-only constant it skips: noise.
    logging.getLogger('onnx_ir.serde').setLevel(logging.ERROR)
    batch = jax.export.symbolic_shape('batch')[0] if batch_size is None else batch_size
    proto = jax2onnx.to_onnx(
        fn,
        [jax.ShapeDtypeStruct((batch, *hwc), jnp.uint8)],
        model_name='ghostnet_jax',
        opset=ONNX_OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
    )
    return onnx_quantize(proto.SerializeToString(), quant, INPUT_NAME, batch_size)


def _export_tflite(
    fn: Callable, batch_size: int | None, hwc: tuple[int, int, int], quant: Quantization
) -> bytes:
    tf = require('tensorflow', 'export-tflite', 'The TFLite export (TensorFlow)')
    from jax.experimental import jax2tf

    dynamic = batch_size is None
    converted = jax2tf.convert(
        fn, polymorphic_shapes=['(b, ...)'] if dynamic else None, with_gradient=False
    )
    tf_fn = tf.function(
        converted,
        autograph=False,
        input_signature=[
            tf.TensorSpec([None if dynamic else batch_size, *hwc], tf.uint8, name=INPUT_NAME)
        ],
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf_fn.get_concrete_function()], tf_fn
    )
    # Built-in ops only: the file must run in the plain LiteRT interpreter, no TF ops.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return tflite_convert(converter, quant, batch_size)


_EXPORTERS = {'stablehlo': _export_stablehlo, 'onnx': _export_onnx, 'tflite': _export_tflite}


# -------------------------------------------------------------------- running exports
# Each runner uses only the format's own runtime, not this package: what a server does.


def run_stablehlo(path: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    exported = jax.export.deserialize(bytearray(Path(path).read_bytes()))
    return lambda images: np.asarray(exported.call(images))


def run_onnx(path: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    ort = require('onnxruntime', 'export-onnx', 'Checking an ONNX export (onnxruntime)')
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]


def run_tflite(path: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    litert = require(
        'ai_edge_litert.interpreter',
        'export-tflite',
        'Checking a TFLite export (the LiteRT interpreter)',
    )
    interpreter = litert.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    shape = [None]

    def run(images: np.ndarray) -> np.ndarray:
        if shape[0] != images.shape:  # re-plan only when the batch size changes
            interpreter.resize_tensor_input(inp['index'], images.shape)
            interpreter.allocate_tensors()
            shape[0] = images.shape
        interpreter.set_tensor(inp['index'], images)
        interpreter.invoke()
        return interpreter.get_tensor(out['index']).copy()

    return run


RUNNERS = {'stablehlo': run_stablehlo, 'onnx': run_onnx, 'tflite': run_tflite}


DYNAMIC_CHUNK = 256  # images per call to a dynamic-batch export


def run_in_batches(fmt: str, path: str | os.PathLike, images: np.ndarray) -> np.ndarray:
    """The export at `path`, run in its own runtime on every image: a fixed-batch export
    (per its metadata) in chunks of its batch size (the last padded with copies of its last
    image), a dynamic one in chunks of DYNAMIC_CHUNK."""
    images = np.ascontiguousarray(images, np.uint8)
    run = RUNNERS[fmt](path)
    fixed = read_metadata(path)['input']['shape'][0]
    batch = fixed or min(DYNAMIC_CHUNK, max(1, len(images)))
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        n = len(chunk)
        if fixed and n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        outputs.append(np.asarray(run(chunk))[:n])
    return np.concatenate(outputs)


def compare_with_predict(
    model: TrainedModel, fmt: str, path: str | os.PathLike, images: np.ndarray
) -> float:
    """Max abs difference between the export, run in its own runtime, and predict."""
    got = run_in_batches(fmt, path, images)
    want = model.predict(np.ascontiguousarray(images, np.uint8))
    if got.shape != want.shape:
        raise ExportMismatchError(f'{path} returned shape {got.shape}, predict {want.shape}.')
    return float(np.max(np.abs(got.astype(np.float32) - want)))


def sample_images(n: int, shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """Photo-like uint8 images (smooth regions, gradients, edges and a little noise) for
    checks when no real ones are given: uniform noise would exercise none of the
    saturated or near-tied cases real inputs hit."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    out = np.empty((n, h, w, c), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    for i in range(n):
        coarse = rng.uniform(0, 255, (4, 4, c))
        rows = np.linspace(0, 3, h)
        cols = np.linspace(0, 3, w)
        r0, c0 = np.floor(rows).astype(int).clip(0, 2), np.floor(cols).astype(int).clip(0, 2)
        fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
        smooth = (
            (1 - fr) * (1 - fc) * coarse[r0][:, c0]
            + fr * (1 - fc) * coarse[r0 + 1][:, c0]
            + (1 - fr) * fc * coarse[r0][:, c0 + 1]
            + fr * fc * coarse[r0 + 1][:, c0 + 1]
        )
        gradient = 60 * (rng.uniform(-1, 1) * yy + rng.uniform(-1, 1) * xx)[..., None]
        edge = xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1) > rng.uniform(-0.5, 0.5)
        img = smooth + gradient + 50 * edge[..., None] + rng.normal(0, 8, (h, w, c))
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata export_model wrote next to the export at `path`."""
    return json.loads(metadata_path(path).read_text())
