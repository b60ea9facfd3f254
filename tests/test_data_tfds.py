"""tfds: sources without TensorFlow (mocked data) and the fast, clear failure modes."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ghostnet_jax import data as D


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
    with pytest.raises(D.DatasetNotAvailableError, match=r"ghostnet_jax\[prepare\]"):
        D.load_split(
            'tfds:cifar10', 'train', data_dir=str(tmp_path / 'empty'), cache_dir=tmp_path / 'c'
        )
