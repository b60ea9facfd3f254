"""Exports round trip: each format, loaded back in its own runtime, against predict.

StableHLO needs only jax and always runs; ONNX and TFLite run where their extras are
installed (export-onnx: jax2onnx + onnxruntime; export-tflite: tensorflow + ai-edge-litert)
and are skipped otherwise.
"""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

import ghostnet_jax
from ghostnet_jax import export as export_cli
from ghostnet_jax.serving import exporters

NEEDS = {
    'stablehlo': (),
    'onnx': ('jax2onnx', 'onnxruntime'),
    'tflite': ('tensorflow', 'ai_edge_litert'),
}
EXTRAS = {'onnx': 'export-onnx', 'tflite': 'export-tflite'}


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # e.g. blocked with sys.modules[module] = None
        return False


def _skip_without_extra(fmt):
    missing = [m for m in NEEDS[fmt] if not _installed(m)]
    if missing:
        pytest.skip(f"{fmt} export needs {missing}: pip install 'ghostnet_jax[{EXTRAS[fmt]}]'")


@pytest.fixture(scope='module')
def model(base_run):
    return ghostnet_jax.load(base_run)


@pytest.fixture(scope='module')
def real_images(trainer, model):
    """The dataset's own PNGs, decoded as predict decodes files: 7 of them (not a power of
    two, so a dynamic batch really is dynamic)."""
    files = sorted((trainer.data / 'train').rglob('*.png'))[::7]
    return model.load_images(files)


@pytest.mark.parametrize(
    'fmt',
    [
        'stablehlo',
        pytest.param('onnx', marks=pytest.mark.extra),
        pytest.param('tflite', marks=pytest.mark.extra),
    ],
)
def test_round_trip_matches_predict(fmt, model, real_images, tmp_path):
    _skip_without_extra(fmt)
    out = exporters.export_model(
        model, fmt, tmp_path / f'model{exporters.SUFFIXES[fmt]}', batch_size=None
    )
    run = exporters.RUNNERS[fmt](out)
    got = np.asarray(run(real_images))
    want = model.predict(real_images)
    assert got.shape == want.shape == (len(real_images), model.num_classes)
    diff = np.abs(got - want).max()
    print(f'{fmt}: {out.stat().st_size / 1e3:.0f} kB, max abs diff vs predict {diff:.3g}')
    assert diff <= exporters.TOLERANCE
    # The images must not all give one answer, or agreement would prove little.
    assert np.ptp(want, axis=0).max() > 100 * exporters.TOLERANCE
    # The same export serves another batch size, one image included.
    np.testing.assert_allclose(run(real_images[:1]), want[:1], atol=exporters.TOLERANCE)

    meta = exporters.read_metadata(out)
    assert meta['input'] == {
        'name': 'images',
        'dtype': 'uint8',
        'layout': 'NHWC',
        'shape': [None, *model.image_shape],
    }
    assert meta['class_names'] == list(model.class_names)
    assert meta['preprocessing']['mean'] == pytest.approx(list(model.spec.mean))

    default = exporters.DEFAULT_BATCH[fmt]
    if default is not None:  # what the CLI writes by default (TFLite: batch 1) works too
        out = exporters.export_model(model, fmt, tmp_path / f'default{exporters.SUFFIXES[fmt]}')
        assert exporters.read_metadata(out)['input']['shape'][0] == default
        assert exporters.compare_with_predict(model, fmt, out, real_images) <= exporters.TOLERANCE


def test_fixed_batch_export_takes_exactly_that_batch(model, real_images, tmp_path):
    out = exporters.export_model(model, 'stablehlo', tmp_path / 'b2.stablehlo', batch_size=2)
    run = exporters.RUNNERS['stablehlo'](out)
    np.testing.assert_allclose(
        run(real_images[:2]), model.predict(real_images[:2]), atol=exporters.TOLERANCE
    )
    with pytest.raises(Exception, match='shape'):
        run(real_images[:3])
    # The checker feeds a fixed-batch export in chunks: 7 images through batch 2.
    assert (
        exporters.compare_with_predict(model, 'stablehlo', out, real_images) <= exporters.TOLERANCE
    )


STANDALONE = """
import sys, numpy as np, jax
exported = jax.export.deserialize(bytearray(open(sys.argv[1], 'rb').read()))
probs = np.asarray(exported.call(np.load(sys.argv[2])))
np.save(sys.argv[3], probs)
assert not [m for m in sys.modules if m.startswith('ghostnet_jax')]
"""


def test_cli_stablehlo_serves_without_the_package(trainer, base_run, model, real_images, tmp_path):
    out = tmp_path / 'cli.stablehlo'
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'ghostnet_jax.export',
            '--workdir',
            str(base_run),
            '--format',
            'stablehlo',
            '--out',
            str(out),
            '--check-images',
            str(trainer.data / 'train' / 'c2'),
        ],
        env=trainer.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads(exporters.metadata_path(out).read_text())
    assert 'max abs difference' in proc.stdout and meta['format'] == 'stablehlo'
    # Evaluated on the run's validation split (it has no test split) in jax.export's own
    # runtime: the float export scores what the trainer's evaluator wrote in results.json.
    results = json.loads((base_run / 'results.json').read_text())
    evaluation = meta['evaluation']
    assert evaluation['split'] == 'val' and evaluation['images'] == results['val']['num_examples']
    assert evaluation['top1'] == pytest.approx(results['val']['accuracy'], abs=1e-9)
    assert evaluation['agreement'] == 1.0 and evaluation['top1_change_pt'] == 0
    assert meta['quantization'] == {'mode': 'none'}
    assert 'val split (10 images' in proc.stdout and 'change +0.00 points' in proc.stdout
    assert (tmp_path / 'exports.csv').read_text().count('\n') == 2  # header and one row
    np.save(tmp_path / 'x.npy', real_images)
    env = trainer.env()
    env.pop('PYTHONPATH', None)
    proc = subprocess.run(
        [
            sys.executable,
            '-c',
            STANDALONE,
            str(out),
            str(tmp_path / 'x.npy'),
            str(tmp_path / 'y.npy'),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(
        np.load(tmp_path / 'y.npy'), model.predict(real_images), atol=exporters.TOLERANCE
    )


def test_cli_missing_extra_and_bad_flags(base_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'jax2onnx', None)  # makes `import jax2onnx` fail
    code = export_cli.main(
        ['--workdir', str(base_run), '--format', 'onnx', '--out', str(tmp_path / 'm.onnx')]
    )
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'ghostnet_jax[export-onnx]'" in err
    assert 'Traceback' not in err
    code = export_cli.main(
        [
            '--workdir',
            str(base_run),
            '--format',
            'stablehlo',
            '--out',
            str(tmp_path / 'm'),
            '--batch-size',
            'zero',
        ]
    )
    assert code == 2 and '--batch-size' in capsys.readouterr().err
    code = export_cli.main(
        [
            '--workdir',
            str(tmp_path / 'nothing'),
            '--format',
            'stablehlo',
            '--out',
            str(tmp_path / 'm'),
        ]
    )
    assert code == 5 and 'does not exist' in capsys.readouterr().err


def test_ghostnetv3_exports_its_folded_form(trainer, real_images, tmp_path):
    """The GhostNetV3 run of test_train_time_budget.job_low_res_budget (no extra training): `load`
    folds it, and the StableHLO export computes what predict does. (Folded against
    unfolded logits: tests/test_convert.py and tests/test_models_v2_v3.py.)"""
    import test_train_time_budget  # noqa: F401  (declares the job 'low_res_budget')
    import train_harness as h

    workdir = trainer.result('low_res_budget')['runs']['reference'].workdir
    model = ghostnet_jax.load(workdir)
    assert model.spec.model_name == h.LOW_RES_MODEL and model.model.reparameterized
    assert not [k for k in model.variables['params']['blocks_1_0'] if '_rpr_' in k]
    out = exporters.export_model(model, 'stablehlo', tmp_path / 'v3.stablehlo', batch_size=None)
    assert (
        exporters.compare_with_predict(model, 'stablehlo', out, real_images) <= exporters.TOLERANCE
    )
