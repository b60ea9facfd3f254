"""benchmark --json: fields, arithmetic, the op-category profile, the optional torch peer.

One tiny end-to-end run (ghostnet_cifar_tiny, batch 8, a 3-step epoch; a background job of
the suite) serves every check on the JSON document; the rest are unit tests on hand-written
inputs.
"""

import csv
import json
import statistics
import sys
from pathlib import Path

import jax
import pytest
import train_harness as h

from ghostnet_jax import benchmark
from ghostnet_jax.benchmarking import profile as prof
from ghostnet_jax.benchmarking import torch_peer
from ghostnet_jax.training.environment import cpu_info, loaded_allocator

BATCH, EPOCH_STEPS, EVAL_BATCH, EVAL_BATCHES, STEPS = 8, 3, 10, 2, 3


@h.job('benchmark_json')
def job_benchmark_json(t: h.Trainer, root: Path) -> dict:
    """`python -m ghostnet_jax.benchmark ... --json`, as a user runs it, in the background
    (its compile and profile are the longest in-process work the suite would otherwise do
    while its jobs start)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / 'bench.json'
    args = [
        sys.executable,
        '-m',
        'ghostnet_jax.benchmark',
        '--model',
        'ghostnet_cifar_tiny',
        '--batch-size',
        str(BATCH),
        '--steps',
        str(STEPS),
        '--epoch-steps',
        str(EPOCH_STEPS),
        '--log-every-steps',
        '2',
        '--eval-batch-size',
        str(EVAL_BATCH),
        '--eval-batches',
        str(EVAL_BATCHES),
        '--json',
        str(path),
        '--profile',
        str(root / 'trace'),
    ]
    proc = h.run_pinned(args, t.env(), root / 'out')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(path.read_text())


@pytest.fixture(scope='module')
def report(trainer):
    return trainer.result('benchmark_json')


def test_json_has_the_issue_fields(report):
    for key in (
        'train_images_per_sec',
        'eval_images_per_sec',
        'compile_s',
        'epoch_images_per_sec',
        'backend',
        'device_count',
        'dtype',
        'batch_size',
        'versions',
        'xla_flags',
        'cpu',
        'allocator',
    ):
        assert key in report, key
    assert report['backend'] == 'cpu'
    assert report['device_count'] == 1  # the run's environment: one CPU device
    assert (report['dtype'], report['batch_size'], report['model']) == (
        'float32',
        BATCH,
        'ghostnet_cifar_tiny',
    )
    assert report['versions']['jax'] == jax.__version__
    assert report['compile_s'] > 0
    # The suite's runs keep glibc's malloc (GHOSTNET_JAX_ALLOCATOR=off, train_harness.env).
    assert report['allocator'] == "glibc's malloc"


def test_throughputs_are_images_over_median_seconds(report):
    # Recomputed from the raw timings in the same document (rounding: 0.1 img/s, 0.1 ms).
    assert len(report['train_step_s']) >= STEPS
    assert report['train_images_per_sec'] == pytest.approx(
        BATCH / statistics.median(report['train_step_s']), rel=0.02
    )
    assert report['train_images_per_sec_mean'] == pytest.approx(
        BATCH * len(report['train_step_s']) / sum(report['train_step_s']), rel=0.02
    )
    assert report['epoch_images_per_sec'] == pytest.approx(
        EPOCH_STEPS * BATCH / report['epoch_s'], rel=0.02
    )
    assert report['eval_images_per_sec'] == pytest.approx(
        EVAL_BATCHES * EVAL_BATCH / statistics.median(report['eval_s']), rel=0.02
    )
    assert len(report['batch_s']) == len(report['train_step_s'])
    assert report['pipeline_over_step'] == pytest.approx(
        statistics.median(report['batch_s']) / statistics.median(report['train_step_s']),
        rel=0.02,
        abs=1e-4,
    )
    assert report['epoch_over_train'] == pytest.approx(
        report['epoch_images_per_sec'] / report['train_images_per_sec'], abs=0.002
    )


def test_profile_charges_time_to_the_network_layers(report):
    p = report['profile']
    assert set(p['seconds']) == set(prof.CATEGORIES)
    assert sum(p['fraction'].values()) == pytest.approx(1.0, abs=0.01)
    # The tiny net's time is mostly convs and BN; none of it may go uncategorized as 0.
    for category in ('depthwise conv', '1x1 conv / matmul', 'BatchNorm'):
        assert p['seconds'][category] > 0, category
        # A train step differentiates every layer: part of each layer's time is backward.
        assert 0 < p['backward_fraction'][category] < 1, category


@pytest.mark.parametrize(
    'op_name,category',
    [
        ('jit(train_step)/jvp(GhostNet)/blocks_0_0/ghost1/cheap_operation/mul', 'depthwise conv'),
        ('jit(train_step)/transpose(jvp(GhostNet))/blocks_3_0/conv_dw/add_any', 'depthwise conv'),
        (
            'jit(train_step)/transpose(jvp(GhostNet))/blocks_1_0/shortcut_pw/dot_general',
            '1x1 conv / matmul',
        ),
        ('jit(train_step)/jvp(GhostNet)/blocks_9_0/conv/dot_general', '1x1 conv / matmul'),
        ('jit(train_step)/jvp(GhostNet)/classifier/dot_general', '1x1 conv / matmul'),
        ('jit(train_step)/jvp(GhostNet)/blocks_0_0/ghost1/primary_bn/reduce_sum', 'BatchNorm'),
        ('jit(train_step)/jvp(GhostNet)/bn1/mul', 'BatchNorm'),
        ('jit(train_step)/jvp(GhostNet)/blocks_3_0/se/conv_reduce/dot_general', 'squeeze-excite'),
        ('jit(train_step)/jvp(GhostNet)/blocks_3_0/se/mul', 'squeeze-excite'),
        ('jit(train_step)/jvp(GhostNet)/conv_stem/dot_general', 'stem 3x3 conv'),
        ('jit(train_step)/jvp(GhostNet)/blocks_0_0/ghost1/max', 'elementwise / other layers'),
        ('jit(train_step)/jvp(GhostNet)/blocks_0_0/add', 'elementwise / other layers'),
        ('jit(train_step)/mul', 'optimizer, loss, metrics'),
    ],
)
def test_categorize(op_name, category):
    assert prof.categorize(op_name) == category


@pytest.mark.parametrize(
    'op_name,want',
    [
        ('jit(train_step)/transpose(jvp(GhostNet))/blocks_3_0/conv_dw/add_any', 'backward'),
        ('jit(train_step)/jvp(GhostNet)/blocks_3_0/conv_dw/mul', 'forward'),
        ('jit(train_step)/mul', 'update'),
    ],
)
def test_direction(op_name, want):
    assert prof.direction(op_name) == want


def test_instruction_names_come_from_hlo_metadata():
    hlo = (
        '  %fusion.12 = f32[8]{0} fusion(%p), kind=kLoop, calls=%fc, metadata={op_type="mul" '
        'op_name="jit(f)/jvp(GhostNet)/blocks_0_0/ghost2/cheap_bn/mul"}\n'
        '  ROOT ynn_fusion.3 = f32[8,8]{1,0} fusion(%a, %b), kind=kCustom, '
        'metadata={op_name="jit(f)/jvp(GhostNet)/blocks_0_0/ghost2/primary_conv/dot_general"}\n'
        '  %copy.1 = f32[8]{0} copy(%x)\n'
    )
    assert prof.instruction_categories(hlo) == {
        'fusion.12': 'BatchNorm',
        'ynn_fusion.3': '1x1 conv / matmul',
    }


def test_cpu_flags_from_cpuinfo(tmp_path):
    f = tmp_path / 'cpuinfo'
    f.write_text(
        'processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: Test CPU\n'
        'flags\t\t: fpu sse2 avx avx2 fma avx512f\n\nprocessor\t: 1\n'
        'flags\t\t: fpu amx_tile\n'
    )
    info = cpu_info(str(f))
    assert (info['model'], info['family'], info['model_number']) == ('Test CPU', '26', '2')
    assert info['flags'] == ['avx', 'avx2', 'fma', 'avx512f']


def test_loaded_allocator_reads_the_process_maps(tmp_path):
    maps = tmp_path / 'maps'
    maps.write_text(
        '7f00-7f01 r-xp 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6\n'
        '7f02-7f03 r-xp 00000000 08:01 456 /usr/lib/libtcmalloc_minimal.so.4.5.10\n'
        '7f04-7f05 rw-p 00000000 00:00 0\n'
    )
    assert loaded_allocator(str(maps)) == '/usr/lib/libtcmalloc_minimal.so.4.5.10'
    maps.write_text('7f00-7f01 r-xp 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6\n')
    assert loaded_allocator(str(maps)) is None
    assert loaded_allocator(str(tmp_path / 'missing')) is None


def test_compare_torch_without_torch_exits_cleanly(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, 'timm', None)  # makes `import timm` fail
    assert benchmark.main(['--compare-torch']) == 2
    assert "pip install 'ghostnet_jax[torch]'" in capsys.readouterr().err


@pytest.mark.skipif(not torch_peer.torch_available(), reason='torch/timm not installed')
def test_torch_peer_is_the_same_network():
    import torch

    step, info = torch_peer.torch_train_step(batch_size=2, image_size=32, threads=1)
    step()
    assert info['parameters'] == 3_913_790  # ghostnet_cifar_100's count (tests/test_models.py)
    # CIFAR strides: output stride 8, so a 32x32 input ends as a 4x4 map (ImageNet's: 1x1).
    model = torch_peer.timm_cifar_ghostnet().eval()
    with torch.no_grad():
        assert tuple(model.forward_features(torch.zeros(1, 3, 32, 32)).shape) == (1, 960, 4, 4)


def test_interleaving_does_not_time_the_first_call_after_a_switch():
    """A call right after the other contender pays for the switch (spinning threads,
    refilled caches): measured 2-3x slower. The timed calls must be the steady ones."""
    import time

    from ghostnet_jax.benchmarking.measure import _interleaved

    calls = []

    def contender(name):
        def fn():
            if calls and calls[-1] != name:
                time.sleep(0.05)  # the switch penalty
            calls.append(name)

        return fn

    times = _interleaved({'a': contender('a'), 'b': contender('b')}, rounds=3, steps_per_round=2)
    assert calls == (['a'] * 3 + ['b'] * 3) * 3  # one untimed call per switch
    assert all(len(t) == 6 and max(t) < 0.03 for t in times.values()), times
    single = _interleaved({'a': contender('a')}, rounds=2, steps_per_round=2)
    assert len(single['a']) == 4


def test_stream_throughput_rows(tmp_path, capsys):
    """--stream-only: host images/s per size and worker count, without a model."""
    path = tmp_path / 'stream.json'
    assert (
        benchmark.main(
            [
                '--stream-only',
                '--stream-workers',
                '0',
                '--stream-sizes',
                '16,64',
                '--stream-images',
                '12',
                '--stream-batch-size',
                '4',
                '--json',
                str(path),
            ]
        )
        == 0
    )
    rows = json.loads(path.read_text())['stream']
    assert [(r['image_size'], r['workers'], r['random_resized_crop']) for r in rows] == [
        (16, 0, False),
        (64, 0, True),
    ]
    for r in rows:
        assert r['batches'] == 2 and r['images_per_sec'] > 0 and r['first_batch_s'] >= 0
    assert '64x64  random-resized crop workers 0' in capsys.readouterr().out
    assert benchmark.main(['--stream-only']) == 2  # nothing to measure: a usage error


# ----------------------------------------------------------------------- --inference


def _inference_args(csv_path, runtimes, second_model):
    return [
        '--inference',
        '--inference-models',
        f'ghostnet_cifar_tiny@16,{second_model}@16',
        '--runtimes',
        runtimes,
        '--latency-runs',
        '4',
        '--throughput-runs',
        '2',
        '--rounds',
        '2',
        '--threads',
        '1',
        '--csv',
        str(csv_path),
    ]


def _inference(tmp_path, runtimes, second_model='mobilenetv3_small_cifar_100'):
    path = tmp_path / 'inference.csv'
    assert benchmark.main(_inference_args(path, runtimes, second_model)) == 0
    return list(csv.DictReader(path.open()))


@h.job('benchmark_inference')
def job_benchmark_inference(t: h.Trainer, root: Path) -> tuple[list[dict], str]:
    """`python -m ghostnet_jax.benchmark --inference` in the core runtimes, in the
    background. The second model is a tiny GhostNetV3, in the folded form the benchmark
    builds for V3 (MobileNetV3-Small, the quantized runtimes' second model, compiles its 4
    programs slower). Returns the CSV rows and the printed output."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / 'inference.csv'
    args = [sys.executable, '-m', 'ghostnet_jax.benchmark']
    args += _inference_args(path, 'jax,stablehlo', 'ghostnetv3_cifar_tiny')
    proc = h.run_pinned(args, t.env(), root / 'out')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return list(csv.DictReader(path.open())), proc.stdout


def test_inference_rows_per_model_and_runtime(trainer):
    from ghostnet_jax.models import create_model
    from ghostnet_jax.models.layer_table import layer_table

    rows, printed = trainer.result('benchmark_inference')
    assert [(r['model'], r['runtime']) for r in rows] == [
        ('ghostnet_cifar_tiny', 'jax'),
        ('ghostnet_cifar_tiny', 'stablehlo'),
        ('ghostnetv3_cifar_tiny', 'jax'),
        ('ghostnetv3_cifar_tiny', 'stablehlo'),
    ]
    for r in rows:
        assert r['input'] == '16x16' and int(r['latency_runs']) == 4
        assert int(r['throughput_runs']) == 2
        assert 0 < float(r['latency_ms_median']) <= float(r['latency_ms_p90'])
        assert float(r['throughput_img_s']) > 0 and r['cpu'] == rows[0]['cpu']
        # GhostNetV3 is measured folded, as it is deployed: fewer parameters than trained.
        folded = r['model'].startswith('ghostnetv3')
        table = layer_table(create_model(r['model'], reparameterized=folded), 16)
        assert float(r['macs_m']) == round(table.macs / 1e6, 2)
        assert float(r['params_m']) == round(table.trainable_params / 1e6, 3)
        if folded:
            unfolded = layer_table(create_model(r['model']), 16).trainable_params
            assert table.trainable_params < unfolded
    assert rows[1]['file_size_mb'] and not rows[0]['file_size_mb']
    assert 'stablehlo' in printed


@pytest.mark.extra
def test_inference_in_the_quantized_runtimes(tmp_path):
    from test_export import _skip_without_extra

    _skip_without_extra('onnx')
    _skip_without_extra('tflite')
    rows = _inference(tmp_path, 'onnx,onnx-int8,tflite,tflite-int8')
    assert [r['runtime'] for r in rows[:4]] == ['onnx', 'onnx-int8', 'tflite', 'tflite-int8']
    size = {r['runtime']: float(r['file_size_mb']) for r in rows[4:]}  # MobileNetV3-Small
    assert size['onnx-int8'] < 0.5 * size['onnx'] and size['tflite-int8'] < 0.5 * size['tflite']


def test_inference_bad_flags(capsys):
    assert benchmark.main(['--inference', '--inference-models', 'nope@32']) == 2
    assert benchmark.main(['--inference', '--runtimes', 'jax,coreml']) == 2
    assert 'coreml' in capsys.readouterr().err
