"""tfds: sources without TensorFlow (mocked data) and the fast, clear failure modes."""

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ghostnet_jax import data as D

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    'name,num_classes', [('cifar10', 10), ('svhn_cropped', 10), ('cifar100', 100)]
)
def test_mock_tfds_load(tmp_path, name, num_classes):
    # mock_data ignores slicing and repeats examples across splits: only check types/shapes here.
    with tfds.testing.mock_data(num_examples=6):
        s = D.load_split(f'tfds:{name}', 'train[:90%]', cache_dir=tmp_path / 'c')
    assert s.images.shape == (6, 32, 32, 3) and s.images.dtype == np.uint8
    assert s.labels.shape == (6,) and s.labels.dtype == np.int32
    assert len(s.class_names) == num_classes
    assert ((s.labels >= 0) & (s.labels < num_classes)).all()
    assert s.name == f'tfds:{name} train[:90%]'
    # Mocked datasets have no files to fingerprint, so nothing may be cached under their key.
    assert not list((tmp_path / 'c').glob('*.npz'))


def test_mock_tfds_resize(tmp_path):
    with tfds.testing.mock_data(num_examples=3):
        s = D.load_split('tfds:cifar10', 'test', cache_dir=tmp_path / 'c', image_size=16)
    assert s.images.shape == (3, 16, 16, 3)


def test_unknown_dataset(tmp_path):
    with pytest.raises(D.UnknownDatasetError, match="'no_such_dataset_xyz'.*folder:PATH"):
        D.load_split('tfds:no_such_dataset_xyz', 'train', data_dir=str(tmp_path))


def test_offline_download_fails_fast_with_actionable_message(tmp_path, monkeypatch):
    # Route the download through a closed loopback port so the test is offline whatever the
    # network (and sends nothing beyond this machine).
    monkeypatch.setenv('HTTPS_PROXY', 'http://127.0.0.1:9')
    monkeypatch.setenv('HTTP_PROXY', 'http://127.0.0.1:9')
    data_dir = tmp_path / 'tfds_empty'
    start = time.monotonic()
    with pytest.raises(D.DatasetNotAvailableError) as info:
        D.load_split(
            'tfds:cifar10',
            'train',
            data_dir=str(data_dir),
            cache_dir=tmp_path / 'c',
            download_timeout=0.5,
        )
    elapsed = time.monotonic() - start
    assert elapsed < 10, elapsed
    msg = str(info.value)
    assert 'cifar10' in msg and str(data_dir) in msg and 'folder:' in msg


def test_no_download_and_env_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'from_env'))
    start = time.monotonic()
    with pytest.raises(D.DatasetNotAvailableError, match='download=False') as info:
        D.load_split('tfds:cifar10', 'test', cache_dir=tmp_path / 'c', download=False)
    assert time.monotonic() - start < 10
    assert str(tmp_path / 'from_env') in str(info.value)


def test_preparing_without_tensorflow_names_the_extra(tmp_path, monkeypatch):
    # Reachable downloads but no TensorFlow: TFDS could not prepare cifar10, so say how to fix.
    from ghostnet_jax.data import tfds_source

    monkeypatch.setattr(tfds_source, '_downloads_reachable', lambda urls, timeout: (True, ''))
    monkeypatch.setattr(
        tfds_source.importlib.util,
        'find_spec',
        lambda name, *a: None if name == 'tensorflow' else object(),
    )
    with pytest.raises(D.DatasetNotAvailableError, match=r'ghostnet_jax\[prepare\]'):
        D.load_split(
            'tfds:cifar10', 'train', data_dir=str(tmp_path / 'empty'), cache_dir=tmp_path / 'c'
        )


def test_tfds_variant_folder_noise_is_not_logged(tmp_path, monkeypatch, caplog):
    # TFDS warns "Variant folder ... has no dataset_info.json" whenever it probes an
    # unprepared dataset; the user should read our message only.
    with caplog.at_level(logging.WARNING), pytest.raises(D.DatasetNotAvailableError):
        D.load_split(
            'tfds:cifar10',
            'test',
            data_dir=str(tmp_path / 'none'),
            cache_dir=tmp_path / 'c',
            download=False,
        )
    assert not [r for r in caplog.records if 'Variant folder' in r.getMessage()]


def _cli(args: list[str], tmp_path, **env) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        HTTPS_PROXY='http://127.0.0.1:9',
        HTTP_PROXY='http://127.0.0.1:9',
        https_proxy='http://127.0.0.1:9',
        http_proxy='http://127.0.0.1:9',
        JAX_PLATFORMS='cpu',
        **env,
    )
    env.pop('TFDS_DATA_DIR', None)
    return subprocess.run(
        [sys.executable, '-m', 'ghostnet_jax.prepare_data', *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_prepare_data_cli_offline_is_one_paragraph_and_exit_code_4(tmp_path):
    args = [
        '--dataset',
        'cifar10',
        '--data-dir',
        str(tmp_path / 'tfds'),
        '--download-timeout',
        '0.5',
    ]
    proc = _cli(args, tmp_path)
    assert proc.returncode == 4, proc.stderr  # ghostnet_jax.cli.errors.DATA
    assert 'Traceback' not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if 'error: Data error' in line]
    assert len(lines) == 1 and 'DatasetNotAvailableError' in lines[0]
    assert str(tmp_path / 'tfds') in lines[0] and 'folder:' in lines[0]
    # The traceback is there on request.
    verbose = _cli(args, tmp_path, GHOSTNET_JAX_VERBOSE='1')
    assert verbose.returncode == 4 and 'Traceback' in verbose.stderr


PREPARE_ONCE_SCRIPT = r"""
import json, sys, time
from pathlib import Path
import jax
port, pid, root = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2,
                           process_id=pid)
from ghostnet_jax.data import tfds_source
from ghostnet_jax.data.errors import DataError, DatasetNotAvailableError

results = {}
for mode in ('shared', 'local', 'fail'):
    # shared/fail: one data_dir for both processes; local: each has its own (not shared).
    data_dir = root / mode / ('shared' if mode != 'local' else f'local{pid}')
    data_dir.mkdir(parents=True, exist_ok=True)
    calls = []

    def fake_prepare(name, data_dir_, **kwargs):
        calls.append(pid)
        if mode == 'fail':
            raise DatasetNotAvailableError('cannot reach the download host (fake)')
        time.sleep(1.0)  # A slow preparation: a racing reader would see nothing yet.
        (Path(data_dir_) / 'prepared').write_text('done')

    def open_():
        if not (data_dir / 'prepared').exists():
            raise AssertionError('not prepared')
        return 'source'

    tfds_source.prepare = fake_prepare
    if pid == 1:
        time.sleep(0.3)  # Process 1 arrives while process 0 is still preparing.
    try:
        out = {'source': tfds_source._ensure_prepared('cifar10', str(data_dir), open_,
                                                      download=True, download_timeout=1.0)}
    except DataError as e:
        out = {'error': type(e).__name__, 'message': str(e)}
    results[mode] = dict(out, calls=calls)
print('RESULT ' + json.dumps(results))
"""


def test_pod_prepares_once_on_process_0_and_the_others_wait(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=1'
    )
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    procs = [
        subprocess.Popen(
            [sys.executable, '-c', PREPARE_ONCE_SCRIPT, str(port), str(i), str(tmp_path)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # A peer that never arrives hangs: fail, don't wait.
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, out[-3000:]
        outs.append(json.loads(out.split('RESULT ', 1)[1]))
    p0, p1 = outs
    # Shared data_dir: only process 0 prepares; process 1 waited for it, then reads.
    assert (p0['shared'], p1['shared']) == (
        {'source': 'source', 'calls': [0]},
        {'source': 'source', 'calls': []},
    )
    # Not shared: process 1 cannot see process 0's copy, so it prepares its own.
    assert (p0['local'], p1['local']) == (
        {'source': 'source', 'calls': [0]},
        {'source': 'source', 'calls': [1]},
    )
    # Process 0's failure reaches process 1 at once (no hang, no second attempt).
    assert p0['fail']['error'] == p1['fail']['error'] == 'DatasetNotAvailableError'
    assert (p0['fail']['calls'], p1['fail']['calls']) == ([0], [])
    assert 'fake' in p0['fail']['message'] and 'process 0' in p1['fail']['message']


# Wheels on PyPI (checked for Python 3.11): tensorflow-cpu for Linux x86_64, macOS x86_64 and
# Windows AMD64 only; tensorflow also for macOS arm64 and Linux aarch64.
@pytest.mark.parametrize(
    'system,machine,want',
    [
        ('Linux', 'x86_64', 'tensorflow-cpu'),
        ('Windows', 'AMD64', 'tensorflow-cpu'),
        ('Darwin', 'x86_64', 'tensorflow-cpu'),
        ('Darwin', 'arm64', 'tensorflow'),
        ('Linux', 'aarch64', 'tensorflow'),
    ],
)
def test_prepare_extra_installs_one_tensorflow_with_wheels_for_the_platform(system, machine, want):
    import tomllib

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    extra = tomllib.loads((REPO / 'pyproject.toml').read_text())['project'][
        'optional-dependencies'
    ]['prepare']
    env = dict(
        default_environment(),
        platform_system=system,
        platform_machine=machine,
        sys_platform={'Linux': 'linux', 'Windows': 'win32', 'Darwin': 'darwin'}[system],
    )
    chosen = [r.name for r in map(Requirement, extra) if r.marker is None or r.marker.evaluate(env)]
    assert chosen == [want]
