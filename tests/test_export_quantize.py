"""Quantized exports (`export --quantize fp16|int8`) and what every export costs.

The reference run (conftest.base_run: ghostnet_cifar_tiny, 3 classes, 16x16 images, a
10-image validation split) is exported; each file is then read back with its own runtime
here (the LiteRT interpreter, onnx/onnxruntime), independently of the exporter's code:
its tensors must really be int8 per channel (or float16), the depthwise convolutions float
with --float-depthwise, and its accuracy on the validation split must be what the command
recorded. The tiny model's 10 validation images make a 10-point step per image, so the
passing commands allow any drop (--max-accuracy-drop 100); the failing one is given a
runtime that answers wrongly.
"""

import collections
import csv
import json

import numpy as np
import pytest
from test_export import _skip_without_extra

import ghostnet_jax
from ghostnet_jax import export as export_cli
from ghostnet_jax.data import load_split
from ghostnet_jax.serving import export_accuracy, exporters


@pytest.fixture(scope='module')
def model(base_run):
    return ghostnet_jax.load(base_run)


@pytest.fixture
def cache(trainer, monkeypatch):
    """In-process commands read the run's data through the session's data cache."""
    monkeypatch.setenv('GHOSTNET_JAX_CACHE', str(trainer.data_cache))


@pytest.fixture(scope='module')
def val_split(trainer, base_run):
    config = json.loads((base_run / 'config.json').read_text())
    return load_split(
        config['data']['source'], config['data']['val_split'], cache_dir=trainer.data_cache
    )


def _export(capsys, *args):
    code = export_cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _litert(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def _tflite_accuracy(path, split):
    interpreter = _litert(path)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    correct = []
    for image, label in zip(split.images, split.labels):
        interpreter.set_tensor(inp['index'], image[None])
        interpreter.invoke()
        correct.append(np.argmax(interpreter.get_tensor(out['index'])[0]) == label)
    return float(np.mean(correct))


def _tflite_conv_weights(path):
    """{op name: [(dtype, number of per-channel scales), ...]} of the conv ops' filters."""
    interpreter = _litert(path)
    tensors = {t['index']: t for t in interpreter.get_tensor_details()}
    found = {}
    for op in interpreter._get_ops_details():
        if op['op_name'] in ('CONV_2D', 'DEPTHWISE_CONV_2D'):
            weights = tensors[op['inputs'][1]]
            scales = weights['quantization_parameters']['scales']
            found.setdefault(op['op_name'], []).append((weights['dtype'], len(scales)))
    return found


@pytest.mark.extra
def test_tflite_int8_is_per_channel_int8_evaluated_and_recorded(
    base_run, model, val_split, tmp_path, capsys, cache
):
    _skip_without_extra('tflite')
    out = tmp_path / 'int8.tflite'
    record = tmp_path / 'record.csv'
    code, stdout, err = _export(
        capsys,
        '--workdir',
        base_run,
        '--format',
        'tflite',
        '--out',
        out,
        '--quantize',
        'int8',
        '--calibration-images',
        16,
        '--max-accuracy-drop',
        100,
        '--record',
        record,
    )
    assert code == 0, err
    assert 'int8: per-channel weights, calibrated on 16 images of folder:' in stdout
    assert 'val split (10 images' in stdout and 'agreement with predict' in stdout

    weights = _tflite_conv_weights(out)
    # Every conv's filter int8, with one scale per output channel (per-channel weights).
    for op, filters in weights.items():
        assert all(dtype == np.int8 and scales > 1 for dtype, scales in filters), (op, filters)
    assert len(weights['DEPTHWISE_CONV_2D']) >= 3 and len(weights['CONV_2D']) >= 6

    meta = exporters.read_metadata(out)
    assert meta['quantization'] == {
        'mode': 'int8',
        'calibration_images': 16,
        'calibration_source': meta['quantization']['calibration_source'],
        'per_channel_weights': True,
        'float_depthwise': False,
    }
    evaluation = meta['evaluation']
    results = json.loads((base_run / 'results.json').read_text())
    # The float model's accuracy here is results.json's (predict vs the trainer's evaluator).
    assert evaluation['float_top1'] == pytest.approx(results['val']['accuracy'], abs=1e-9)
    assert evaluation['results_json_top1'] == pytest.approx(results['val']['accuracy'])
    # The export's accuracy, recomputed here with the LiteRT interpreter alone.
    assert evaluation['images'] == len(val_split) == 10
    assert evaluation['top1'] == pytest.approx(_tflite_accuracy(out, val_split), abs=1e-9)
    assert evaluation['top1_change_pt'] == pytest.approx(
        100 * (evaluation['top1'] - evaluation['float_top1']), abs=1e-3
    )
    [row] = list(csv.DictReader(record.open()))
    assert (
        row['format'] == 'tflite' and row['quantize'] == 'int8' and row['split'].startswith('val')
    )
    assert float(row['top1']) == pytest.approx(100 * evaluation['top1'], abs=0.01)
    assert float(row['file_size_mb']) == pytest.approx(out.stat().st_size / 1e6, abs=1e-3)


@pytest.mark.extra
def test_tflite_float_depthwise_and_fp16(model, tmp_path):
    _skip_without_extra('tflite')
    from ghostnet_jax.serving.quantization import Quantization

    calibration = exporters.sample_images(8, model.image_shape)
    out = exporters.export_model(
        model,
        'tflite',
        tmp_path / 'dw.tflite',
        quantization=Quantization('int8', calibration, float_depthwise=True),
    )
    weights = _tflite_conv_weights(out)
    assert {np.dtype(d) for d, _ in weights['DEPTHWISE_CONV_2D']} == {np.dtype(np.float32)}
    assert {np.dtype(d) for d, _ in weights['CONV_2D']} == {np.dtype(np.int8)}

    fp16 = exporters.export_model(
        model, 'tflite', tmp_path / 'fp16.tflite', quantization=Quantization('fp16')
    )
    dtypes = {np.dtype(t['dtype']) for t in _litert(fp16).get_tensor_details()}
    assert np.dtype(np.float16) in dtypes
    images = exporters.sample_images(5, model.image_shape, seed=3)
    got = exporters.run_in_batches('tflite', fp16, images)
    np.testing.assert_allclose(got, model.predict(images), atol=2e-2)


def _onnx_graph(path):
    import onnx

    return onnx.load(str(path)).graph


@pytest.mark.extra
def test_onnx_fp16_computes_in_float16_and_keeps_the_float_models_io(model, tmp_path):
    _skip_without_extra('onnx')
    import onnx
    import onnxruntime as ort

    from ghostnet_jax.serving.quantization import Quantization

    out = exporters.export_model(
        model, 'onnx', tmp_path / 'fp16.onnx', quantization=Quantization('fp16')
    )
    # The weights (initializers; jax2onnx transposes some before their Conv) are float16.
    sizes: dict[int, int] = {}
    for init in _onnx_graph(out).initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        sizes[init.data_type] = sizes.get(init.data_type, 0) + n
    assert sizes.get(onnx.TensorProto.FLOAT16, 0) > 0.95 * sum(sizes.values()), sizes
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    assert session.get_inputs()[0].type == 'tensor(uint8)'
    assert session.get_outputs()[0].type == 'tensor(float)'
    images = exporters.sample_images(5, model.image_shape, seed=3)
    got = exporters.run_in_batches('onnx', out, images)
    np.testing.assert_allclose(got, model.predict(images), atol=2e-2)
    float32 = exporters.export_model(model, 'onnx', tmp_path / 'f.onnx')
    # Half the weights' bytes; on this tiny model the graph's own structure is a good part
    # of the file (measured 0.63 of the float32 file).
    assert out.stat().st_size < 0.7 * float32.stat().st_size


@pytest.mark.extra
def test_onnx_int8_is_qdq_per_channel_and_float_depthwise_keeps_them_float(
    base_run, model, val_split, tmp_path, capsys, cache
):
    _skip_without_extra('onnx')
    import onnx.numpy_helper
    import onnxruntime as ort

    out = tmp_path / 'int8.onnx'
    code, stdout, err = _export(
        capsys,
        '--workdir',
        base_run,
        '--format',
        'onnx',
        '--out',
        out,
        '--quantize',
        'int8',
        '--calibration-images',
        16,
        '--max-accuracy-drop',
        100,
    )
    assert code == 0, err
    graph = _onnx_graph(out)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    conv_weights = []
    for node in graph.node:
        if node.op_type == 'Conv':
            dq = producers[node.input[1]]
            assert dq.op_type == 'DequantizeLinear', node.name
            axis = next((a.i for a in dq.attribute if a.name == 'axis'), None)
            conv_weights.append((inits[dq.input[0]].dtype, inits[dq.input[1]].size, axis))
    assert conv_weights and all(
        dtype == np.int8 and n > 1 and axis == 0 for dtype, n, axis in conv_weights
    ), conv_weights
    # Evaluated and recorded beside the file (the default record).
    [row] = list(csv.DictReader((tmp_path / 'exports.csv').open()))
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    probs = session.run(None, {'images': val_split.images})[0]
    accuracy = float(np.mean(np.argmax(probs, -1) == val_split.labels))
    assert float(row['top1']) == pytest.approx(100 * accuracy, abs=0.01)
    assert exporters.read_metadata(out)['evaluation']['top1'] == pytest.approx(accuracy)

    from ghostnet_jax.serving.quantization import Quantization

    dw = exporters.export_model(
        model,
        'onnx',
        tmp_path / 'dw.onnx',
        quantization=Quantization(
            'int8', exporters.sample_images(8, model.image_shape), float_depthwise=True
        ),
    )
    graph = _onnx_graph(dw)
    producers = {o: n for n in graph.node for o in n.output}
    kinds = set()
    for node in graph.node:
        if node.op_type == 'Conv':
            group = next((a.i for a in node.attribute if a.name == 'group'), 1)
            source = producers.get(node.input[1])
            kinds.add((group > 1, source is not None and source.op_type == 'DequantizeLinear'))
    assert kinds == {(True, False), (False, True)}  # depthwise float, the others int8


@pytest.mark.extra
def test_int8_losing_accuracy_exits_1_and_names_float_depthwise(
    base_run, tmp_path, capsys, cache, monkeypatch
):
    _skip_without_extra('onnx')
    real = export_accuracy.run_in_batches

    def wrong(fmt, path, images):  # a runtime whose every answer is another class
        return np.roll(real(fmt, path, images), 1, axis=-1)

    monkeypatch.setattr(export_accuracy, 'run_in_batches', wrong)
    out = tmp_path / 'bad.onnx'
    code, _, err = _export(
        capsys,
        '--workdir',
        base_run,
        '--format',
        'onnx',
        '--out',
        out,
        '--quantize',
        'int8',
        '--calibration-images',
        8,
        '--no-check',
    )
    assert code == 1, err
    assert '--float-depthwise first' in err and '--max-accuracy-drop 1' in err
    assert 'Traceback' not in err and out.exists()


@pytest.mark.extra
def test_onnx_hard_sigmoid_is_one_op(model, tmp_path):
    _skip_without_extra('onnx')
    out = exporters.export_model(model, 'onnx', tmp_path / 'f.onnx')
    ops = [n.op_type for n in _onnx_graph(out).node]
    assert 'HardSigmoid' in ops and 'Clip' not in ops, sorted(set(ops))


@pytest.mark.parametrize(
    'args, message',
    [
        (['--format', 'stablehlo', '--quantize', 'int8'], 'jax.export has no post-training'),
        (['--format', 'stablehlo', '--quantize', 'fp16'], 'jax.export has no post-training'),
        (['--format', 'tflite', '--float-depthwise'], 'applies to --quantize int8 only'),
        (['--format', 'tflite', '--quantize', 'fp16', '--max-accuracy-drop', '-1'], '>= 0'),
        (['--format', 'tflite', '--quantize', 'int8', '--calibration-images', '0'], 'at least 1'),
    ],
)
def test_quantization_refusals_are_usage_errors(base_run, tmp_path, capsys, args, message):
    code, _, err = _export(capsys, '--workdir', base_run, '--out', tmp_path / 'm', *args)
    assert code == 2 and message in err and 'Traceback' not in err, err
    assert not (tmp_path / 'm').exists()


def test_accuracy_drop_message_suggests_options_in_order():
    from ghostnet_jax.serving.quantization import Quantization

    report = {
        'top1': 0.80,
        'float_top1': 0.88,
        'top1_change_pt': -8.0,
        'split': 'val',
        'images': 5000,
        'calibration_images': 200,
    }
    int8 = Quantization('int8', np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(export_accuracy.AccuracyLossError) as e:
        export_accuracy.check_accuracy_drop(report, 1.0, 'tflite', int8)
    text = str(e.value)
    assert text.index('--float-depthwise') < text.index('--calibration-images')
    assert text.index('--calibration-images') < text.index('--quantize fp16')
    export_accuracy.check_accuracy_drop(report, 8.0, 'tflite', int8)  # within the bound


@pytest.mark.extra
def test_mobilenetv3_hard_swish_is_one_op_in_onnx_and_tflite(tmp_path):
    _skip_without_extra('onnx')
    _skip_without_extra('tflite')
    from ghostnet_jax.benchmarking.inference import random_trained_model

    model = random_trained_model('mobilenetv3_small_cifar_100', 16)
    onnx_ops = {
        n.op_type
        for n in _onnx_graph(exporters.export_model(model, 'onnx', tmp_path / 'm.onnx')).node
    }
    assert {'HardSwish', 'HardSigmoid'} <= onnx_ops and 'Clip' not in onnx_ops, onnx_ops
    path = exporters.export_model(model, 'tflite', tmp_path / 'm.tflite')
    tflite_ops = {op['op_name'] for op in _litert(path)._get_ops_details()}
    assert 'HARD_SWISH' in tflite_ops, tflite_ops


@pytest.mark.extra
def test_dfc_attention_pools_and_upsamples_as_single_ops(tmp_path):
    """GhostNetV2's DFC gate exports its 2x2 average pooling and its 2x nearest upsampling
    as one op each: LiteRT's XNNPACK delegate runs AVERAGE_POOL_2D and
    RESIZE_NEAREST_NEIGHBOR, while the training formulation's 6-D RESHAPE + SUM and
    BROADCAST_TO fell back to the reference kernels (3.4x slower, docs/serving.md)."""
    _skip_without_extra('onnx')
    _skip_without_extra('tflite')
    from ghostnet_jax.benchmarking.inference import random_trained_model

    # At 32x32 every DFC map has even sides (odd ones, e.g. 7 -> 3 -> 7 at 224, upsample
    # by PyTorch's rule with a gather, which no single resize op reproduces).
    model = random_trained_model('ghostnetv2_cifar_tiny', 32)
    path = exporters.export_model(model, 'tflite', tmp_path / 'm.tflite')
    tflite_ops = collections.Counter(op['op_name'] for op in _litert(path)._get_ops_details())
    assert tflite_ops['AVERAGE_POOL_2D'] == tflite_ops['RESIZE_NEAREST_NEIGHBOR'] > 0, tflite_ops
    assert not {'BROADCAST_TO', 'GATHER_ND'} & set(tflite_ops), tflite_ops
    # ONNX: dynamic batch by default, where the upsampling stays a broadcast (jax2onnx's
    # resize takes no symbolic batch); with a fixed batch, one Resize per gate.
    for batch, want in ((None, 0), (1, tflite_ops['AVERAGE_POOL_2D'])):
        out = exporters.export_model(model, 'onnx', tmp_path / f'm{batch}.onnx', batch)
        onnx_ops = collections.Counter(n.op_type for n in _onnx_graph(out).node)
        assert onnx_ops['AveragePool'] == tflite_ops['AVERAGE_POOL_2D'], onnx_ops
        assert onnx_ops['Resize'] == want, onnx_ops
