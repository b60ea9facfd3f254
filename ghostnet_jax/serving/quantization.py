"""Post-training quantization of TFLite and ONNX exports, with the converters' own quantizers.

    none  float32, as trained.
    fp16  TFLite: weights stored as float16 (the TFLite converter's float16 quantization);
          the interpreter computes in float32 on CPUs, in float16 on GPU delegates.
          ONNX: the whole graph in float16 (ONNX Runtime's float16 converter), its uint8
          input and float32 output kept, so callers feed and read it as the float model.
    int8  full-integer post-training quantization calibrated on real images: per-channel
          int8 weights, int8/uint8 activations. TFLite: the TFLite converter with a
          representative dataset; ONNX: ONNX Runtime's `quantize_static` in QDQ format
          (uint8 activations, int8 weights: what its x86 kernels run fastest).

`float_depthwise` keeps every depthwise convolution in float (TFLite: the converter's
selective quantization, `QuantizationDebugOptions(denylisted_ops=['DEPTHWISE_CONV_2D'])`;
ONNX: the Conv nodes with groups excluded from `quantize_static`). In a GhostNet these are
the Ghost modules' cheap operations, the layer the GhostNet authors advise keeping in float,
plus each stride-2 bottleneck's depthwise conv and V2/V3's DFC 1x5/5x1 convs: a few
percent of the MACs.

Nothing here quantizes by hand: it sets the converters' options and feeds them images.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ghostnet_jax.optional import require

MODES = ('none', 'fp16', 'int8')
# What each format's quantizer supports here (others are refused, naming the ones that work).
SUPPORTED = {'stablehlo': ('none',), 'onnx': MODES, 'tflite': MODES}
REFUSALS = {
    ('stablehlo', 'fp16'): (
        'jax.export has no post-training quantizer: a StableHLO export stays float32. '
        'For fp16 weights export --format tflite --quantize fp16.'
    ),
    ('stablehlo', 'int8'): (
        'jax.export has no post-training quantizer: a StableHLO export stays float32. '
        'For int8 export --format tflite or --format onnx with --quantize int8.'
    ),
}
DEFAULT_CALIBRATION_IMAGES = 200
DEPTHWISE_TFLITE_OP = 'DEPTHWISE_CONV_2D'
ONNX_CALIBRATION_BATCH = 32


class QuantizationOptionError(ValueError):
    """A quantization the format cannot do here, or one that lacks what it needs."""


def check_request(fmt: str, mode: str, float_depthwise: bool = False) -> None:
    """QuantizationOptionError, naming what works instead, for a quantization `fmt` cannot
    have here (checked before any model is loaded)."""
    if mode not in MODES:
        raise QuantizationOptionError(f'--quantize must be one of {MODES}, got {mode!r}.')
    if mode not in SUPPORTED[fmt]:
        raise QuantizationOptionError(
            f'--quantize {mode} is not available for --format {fmt}: {REFUSALS[(fmt, mode)]}'
        )
    if float_depthwise and mode != 'int8':
        raise QuantizationOptionError(
            f'--float-depthwise applies to --quantize int8 only (got --quantize {mode}).'
        )


@dataclasses.dataclass(frozen=True)
class Quantization:
    """What to quantize and how: `mode` (MODES); for int8, `calibration` (uint8 NHWC
    images at the model's input size) and where they came from; `float_depthwise`."""

    mode: str = 'none'
    calibration: np.ndarray | None = dataclasses.field(default=None, repr=False)
    calibration_source: str = ''
    float_depthwise: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise QuantizationOptionError(f'--quantize must be one of {MODES}, got {self.mode!r}.')
        if self.mode == 'int8' and (self.calibration is None or len(self.calibration) == 0):
            raise QuantizationOptionError(
                'int8 quantization needs calibration images (--calibration-images N from the '
                "run's training split, or --calibration-from FOLDER)."
            )
        if self.float_depthwise and self.mode != 'int8':
            raise QuantizationOptionError(
                f'--float-depthwise applies to --quantize int8 only (got --quantize {self.mode}).'
            )

    @property
    def quantized(self) -> bool:
        return self.mode != 'none'

    def check_format(self, fmt: str) -> None:
        """QuantizationOptionError when `fmt` cannot be quantized as asked."""
        check_request(fmt, self.mode, self.float_depthwise)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {'mode': self.mode}
        if self.mode == 'int8':
            out.update(
                calibration_images=int(len(self.calibration)),
                calibration_source=self.calibration_source,
                per_channel_weights=True,
                float_depthwise=self.float_depthwise,
            )
        return out


def calibration_batches(images: np.ndarray, batch_size: int | None) -> Iterator[np.ndarray]:
    """The calibration images in batches the exported graph accepts: `batch_size` for a
    fixed batch (the last one filled with the first images again), else one at a time."""
    images = np.ascontiguousarray(images, np.uint8)
    if batch_size is None or batch_size == 1:
        for image in images:
            yield image[None]
        return
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if len(batch) < batch_size:
            batch = np.concatenate(
                [batch, np.resize(images, (batch_size - len(batch),) + batch.shape[1:])]
            )
        yield batch


# ------------------------------------------------------------------------------ TFLite


def tflite_convert(converter: Any, quant: Quantization, batch_size: int | None) -> bytes:
    """Runs the TFLite converter `converter` (float graph, built-in ops) with `quant`'s
    settings and returns the flatbuffer."""
    tf = require('tensorflow', 'export-tflite', 'The TFLite export (TensorFlow)')
    if quant.mode == 'none':
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quant.mode == 'fp16':
        converter.target_spec.supported_types = [tf.float16]
        return converter.convert()
    # int8: weights per channel (the converter's default), activations calibrated on the
    # representative dataset. Ops without an int8 kernel (the uint8 -> float cast of the
    # input) stay float rather than failing the conversion.
    calibration = quant.calibration

    def representative() -> Iterator[list[np.ndarray]]:
        for batch in calibration_batches(calibration, batch_size):
            yield [batch]

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    if not quant.float_depthwise:
        return converter.convert()
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=representative,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=[DEPTHWISE_TFLITE_OP]
        ),
    )
    return debugger.get_nondebug_quantized_model()


# -------------------------------------------------------------------------------- ONNX


class _CalibrationReader:
    """onnxruntime.quantization's CalibrationDataReader protocol over uint8 images."""

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int | None):
        self.input_name = input_name
        self.batches = list(calibration_batches(images, batch_size or ONNX_CALIBRATION_BATCH))
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {self.input_name: self.batches[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


def depthwise_conv_nodes(model: Any) -> list[str]:
    """Names of an ONNX graph's grouped (depthwise) Conv nodes."""
    names = []
    for node in model.graph.node:
        if node.op_type != 'Conv':
            continue
        group = next((a.i for a in node.attribute if a.name == 'group'), 1)
        if group > 1:
            names.append(node.name)
    return names


def onnx_quantize(
    blob: bytes, quant: Quantization, input_name: str, batch_size: int | None
) -> bytes:
    """The float ONNX model `blob` quantized as `quant` says (fp16: ONNX Runtime's float16
    converter; int8: its static QDQ quantization, per-channel weights, MinMax calibration)."""
    if quant.mode == 'none':
        return blob
    onnx = require('onnx', 'export-onnx', 'The ONNX quantization (onnx)')
    if quant.mode == 'fp16':
        f16 = require(
            'onnxruntime.transformers.float16', 'export-onnx', 'The ONNX float16 conversion'
        )
        # keep_io_types: the uint8 images in and float32 probabilities out stay as they are,
        # so `predict`-style callers need no change; everything between runs in float16.
        model = f16.convert_float_to_float16(onnx.load_from_string(blob), keep_io_types=True)
        return model.SerializeToString()
    oq = require('onnxruntime.quantization', 'export-onnx', 'The ONNX quantization (onnxruntime)')
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (Path(tmp) / name for name in ('float.onnx', 'pre.onnx', 'int8.onnx'))
        src.write_bytes(blob)
        # ONNX Runtime's recommended preparation: shape inference and graph optimization
        # (constant folding, BatchNorm into Conv) so that what is quantized is what runs.
        oq.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        for i, node in enumerate(model.graph.node):  # the quantizer addresses nodes by name
            node.name = node.name or f'{node.op_type}_{i}'
        onnx.save(model, str(pre))
        exclude = depthwise_conv_nodes(model) if quant.float_depthwise else []
        oq.quantize_static(
            str(pre),
            str(dst),
            _CalibrationReader(input_name, quant.calibration, batch_size),
            quant_format=oq.QuantFormat.QDQ,
            per_channel=True,
            activation_type=oq.QuantType.QUInt8,
            weight_type=oq.QuantType.QInt8,
            calibrate_method=oq.CalibrationMethod.MinMax,
            nodes_to_exclude=exclude,
        )
        return dst.read_bytes()
