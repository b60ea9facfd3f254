"""TFDS's own cifar10 builder end to end, offline: a small archive in the format TFDS
downloads (cifar-10-binary.tar.gz), `python -m ghostnet_jax.prepare_data`, array_record,
TFDS slicing semantics, and one short training run of the real CLI from tfds:cifar10.

Preparing needs TensorFlow (the `prepare` extra), so this module skips without it; reading
and training do not, and the training run is made to prove it (TensorFlow is blocked there).
The archive is handed to TFDS through its own download cache: the file sits where TFDS
stores a finished download of the registered URL (name from URL + registered checksum, plus
the .INFO marker), so TFDS skips the download, trusts the registered checksum, extracts the
archive and runs the unmodified builder. Nothing leaves the machine: proxies point at a
closed local port.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import train_harness as h

pytestmark = [
    pytest.mark.extra,
    pytest.mark.skipif(
        importlib.util.find_spec('tensorflow') is None,
        reason="preparing TFDS datasets needs TensorFlow: pip install -e '.[prepare]'",
    ),
]

# Records per file of the small archive: 5 training batches + 1 test batch, as in the real one.
PER_TRAIN_FILE, NUM_TEST = 12, 20
NUM_TRAIN = 5 * PER_TRAIN_FILE  # 60
CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
OFFLINE = {
    'HTTPS_PROXY': 'http://127.0.0.1:9',
    'HTTP_PROXY': 'http://127.0.0.1:9',
    'https_proxy': 'http://127.0.0.1:9',
    'http_proxy': 'http://127.0.0.1:9',
}


def _records(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return images, labels


def _binary(images: np.ndarray, labels: np.ndarray) -> bytes:
    # CIFAR-10 binary format: per record 1 label byte, then 3072 bytes of R, G, B planes (CHW).
    return b''.join(
        bytes([int(y)]) + x.transpose(2, 0, 1).tobytes() for x, y in zip(images, labels)
    )


def _write_archive(download_dir: Path) -> dict:
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import resource

    rng = np.random.default_rng(0)
    train = [_records(rng, PER_TRAIN_FILE) for _ in range(5)]
    test = _records(rng, NUM_TEST)
    members = {f'data_batch_{i + 1}.bin': _binary(*b) for i, b in enumerate(train)}
    members['test_batch.bin'] = _binary(*test)
    members['batches.meta.txt'] = ('\n'.join(CLASSES) + '\n\n').encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f'cifar-10-batches-bin/{name}')
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    # Where TFDS keeps a finished download of the URL it has registered for cifar10.
    ((url, url_info),) = tfds.builder('cifar10').url_infos.items()
    assert url.endswith('cifar-10-binary.tar.gz')
    download_dir.mkdir(parents=True)
    path = download_dir / resource.get_dl_fname(url, url_info.checksum)
    path.write_bytes(buf.getvalue())
    resource.get_info_path(path).write_text(json.dumps({'urls': [url]}))
    return dict(
        train=(np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])),
        test=test,
    )


def _env(tmp: Path, **extra: str) -> dict:
    env = dict(
        os.environ,
        **OFFLINE,
        JAX_PLATFORMS='cpu',
        PYTHONUNBUFFERED='1',
        XLA_FLAGS=f'--xla_force_host_platform_device_count=1 {h.XLA_TEST_FLAGS}',
        GHOSTNET_JAX_CACHE=str(tmp / 'data_cache'),
        JAX_COMPILATION_CACHE_DIR=os.environ.get('GHOSTNET_JAX_TEST_COMPILE_CACHE')
        or str(tmp / 'jax_cache'),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
    )
    env.pop('TFDS_DATA_DIR', None)
    env['PYTHONPATH'] = os.pathsep.join([str(h.REPO), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    env.update(extra)
    return env


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('tfds_cifar10')
    data_dir = tmp / 'tfds'
    written = _write_archive(data_dir / 'downloads')
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'ghostnet_jax.prepare_data',
            '--dataset',
            'cifar10',
            '--data-dir',
            str(data_dir),
            '--download-timeout',
            '1',
        ],
        cwd=h.REPO,
        env=_env(tmp),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'Prepared tfds:cifar10' in proc.stdout
    return tmp, data_dir, written


def _as_set(images: np.ndarray, labels: np.ndarray) -> list:
    return sorted((int(y), x.tobytes()) for x, y in zip(images, labels))


def test_prepared_as_array_record_with_tfds_split_sizes(prepared):
    import tensorflow_datasets as tfds

    _, data_dir, _ = prepared
    version_dir = data_dir / 'cifar10' / '3.0.2'
    assert sorted(
        p.name.split('.array_record')[0] for p in version_dir.glob('*.array_record*')
    ) == ['cifar10-test', 'cifar10-train']
    splits = tfds.builder('cifar10', data_dir=str(data_dir)).info.splits
    # TFDS's own split arithmetic agrees with the hand-computed sizes.
    for spec, n in (
        ('train', 60),
        ('test', 20),
        ('train[:10%]', 6),
        ('train[10:20]', 10),
        ('train[:80%]', 48),
        ('train[80%:]', 12),
    ):
        assert splits[spec].num_examples == n, spec


def test_splits_and_slices_read_without_tensorflow(prepared, tmp_path):
    from ghostnet_jax import data as D

    _, data_dir, written = prepared
    load = lambda spec: D.load_split(
        'tfds:cifar10', spec, data_dir=str(data_dir), cache_dir=tmp_path / 'c', download=False
    )
    train, test = load('train'), load('test')
    assert train.class_names == tuple(CLASSES)
    assert (len(train), len(test)) == (NUM_TRAIN, NUM_TEST)
    assert train.images.shape[1:] == (32, 32, 3)
    # Same examples as the archive (TFDS stores them in its own shuffled order).
    assert _as_set(train.images, train.labels) == _as_set(*written['train'])
    assert _as_set(test.images, test.labels) == _as_set(*written['test'])
    # TFDS slicing semantics: absolute rows of the split's one order; percents round(pct*n/100).
    for spec, rows in (
        ('train[:10%]', range(0, 6)),
        ('train[10:20]', range(10, 20)),
        ('train[80%:]', range(48, 60)),
        ('train[-3:]', range(57, 60)),
    ):
        part = load(spec)
        np.testing.assert_array_equal(part.images, train.images[list(rows)], err_msg=spec)
        np.testing.assert_array_equal(part.labels, train.labels[list(rows)], err_msg=spec)
    with pytest.raises(D.SplitNotFoundError, match="'validation'.*'train' has 60 examples"):
        load('validation')
    with pytest.raises(D.InvalidSplitSpecError, match="'train' has 60 examples"):
        load('train[:61]')


def test_one_training_run_from_tfds_cifar10(prepared):
    tmp, data_dir, _ = prepared
    # A `tensorflow` that cannot be imported: training must read the prepared data without it.
    blocker = tmp / 'no_tensorflow'
    (blocker / 'tensorflow').mkdir(parents=True, exist_ok=True)
    (blocker / 'tensorflow' / '__init__.py').write_text(
        "raise ImportError('TensorFlow is blocked in this test')\n"
    )
    env = _env(tmp)
    env['PYTHONPATH'] = os.pathsep.join([str(blocker), env['PYTHONPATH']])
    workdir = tmp / 'run'
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'ghostnet_jax.train',
            f'--config={h.SMOKE}',
            f'--workdir={workdir}',
            '--config.data.source=tfds:cifar10',
            f'--config.data.data_dir={data_dir}',
            '--config.data.test_split=test',
            '--config.model.conv_impl=native',
            '--config.num_epochs=1',
            '--config.batch_size=16',
            '--config.eval_batch_size=16',
        ],
        cwd=h.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    results = json.loads((workdir / 'results.json').read_text())
    # smoke.py: train[:80%] (48) / train[80%:] (12) of the 60 prepared training examples.
    assert results['val']['num_examples'] == 12
    assert results['test']['num_examples'] == NUM_TEST
    train_records = [r for r in h.metrics(workdir) if r['split'] == 'train' and 'loss' in r]
    assert max(r['step'] for r in train_records) == 48 // 16


def test_manual_dir_archive_is_checked_against_the_registered_checksum(tmp_path):
    # An archive handed over in --manual-dir is taken offline (no download attempt), but TFDS
    # verifies it against the checksum it registers for the real file: this small one fails,
    # as one paragraph with the data-error exit code.
    download = tmp_path / 'downloads'
    _write_archive(download)
    manual = tmp_path / 'manual'
    manual.mkdir()
    (archive,) = [p for p in download.iterdir() if not p.name.endswith('.INFO')]
    archive.rename(manual / 'cifar-10-binary.tar.gz')
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'ghostnet_jax.prepare_data',
            '--dataset',
            'cifar10',
            '--data-dir',
            str(tmp_path / 'tfds'),
            '--manual-dir',
            str(manual),
            '--download-timeout',
            '1',
        ],
        cwd=h.REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if 'error: Data error' in x]
    assert 'checksum' in line and 'cannot reach' not in line
