"""Multi-host data loading pieces, on one process: lazy row-range decoding, its cache, and
statistics summed from pieces. (Per-process placement over 8 fake devices is checked in
test_data_multidevice; two real processes in test_train_distributed.)"""

import logging
import os

import jax
import numpy as np
import pytest
from test_data_folder import _write_folder

from ghostnet_jax import data as D
from ghostnet_jax.data import images as images_lib
from ghostnet_jax.data import placement
from ghostnet_jax.data.arrays import stats_from_sums
from ghostnet_jax.data.sliced import to_ranges

SPEC = 'train[:80%]'


@pytest.fixture
def folder(tmp_path):
    return f'folder:{_write_folder(tmp_path / "ds", jpeg_class=None)}'


def test_open_decodes_nothing_until_rows_or_the_shape_are_asked_for(folder, tmp_path, monkeypatch):
    calls = []
    real = images_lib.decode_file
    monkeypatch.setattr(images_lib, 'decode_file', lambda f, s=None: calls.append(f) or real(f, s))
    lazy = D.open_lazy_split(folder, SPEC, cache_dir=tmp_path / 'c')
    assert calls == [] and len(lazy) == 14 and lazy.class_names == ('ant', 'cat', 'dog')
    assert lazy.image_shape == (5, 6, 3)
    # Row 0 of the interleaved order is cat's first file (see test_data_folder.ORDER).
    assert [os.path.relpath(f, folder[len('folder:') :]) for f in calls] == ['train/cat/0000.png']


def test_eager_loading_is_lazy_loading_of_every_row(folder, tmp_path, monkeypatch):
    calls = []
    real = images_lib.decode_file
    monkeypatch.setattr(images_lib, 'decode_file', lambda f, s=None: calls.append(f) or real(f, s))
    full = D.load_split(folder, SPEC, cache_dir=tmp_path / 'c')
    # Each selected file decoded exactly once: no extra decode of row 0 for the shape.
    assert len(calls) == len(set(calls)) == len(full) == 14
    # One path, one cache: reading all rows lazily afterwards is a cache hit, and so is
    # eager loading after a lazy read of all rows (other cache folder, other order).
    monkeypatch.setattr(images_lib, 'decode_file', lambda *_: 1 / 0)
    lazy_all = D.open_lazy_split(folder, SPEC, cache_dir=tmp_path / 'c').read_all()
    monkeypatch.setattr(images_lib, 'decode_file', real)
    first = D.open_lazy_split(folder, SPEC, cache_dir=tmp_path / 'c2').read_rows([(0, 14)])
    monkeypatch.setattr(images_lib, 'decode_file', lambda *_: 1 / 0)
    eager = D.load_split(folder, SPEC, cache_dir=tmp_path / 'c2')
    for other in (lazy_all, first, eager):
        np.testing.assert_array_equal(other.images, full.images)
        np.testing.assert_array_equal(other.labels, full.labels)
        assert (other.name, other.class_names) == (full.name, full.class_names)


@pytest.mark.parametrize('ranges', [[(0, 14)], [(2, 5)], [(0, 1), (6, 9), (12, 14)], []])
def test_row_ranges_equal_slices_of_the_full_split(folder, tmp_path, ranges):
    full = D.load_split(folder, SPEC, cache_dir=tmp_path / 'c')
    assert len(full) == 14  # round(0.8 * 18) of the 3 + 10 + 5 interleaved files
    part = D.open_lazy_split(folder, SPEC, cache_dir=tmp_path / 'c').read_rows(ranges)
    rows = np.concatenate([np.arange(a, b) for a, b in ranges] or [np.zeros(0, int)])
    np.testing.assert_array_equal(part.images, full.images[rows])
    np.testing.assert_array_equal(part.labels, full.labels[rows])
    assert part.images.shape[1:] == full.images.shape[1:] and part.class_names == full.class_names
    np.testing.assert_array_equal(full.read_rows(ranges).images, full.images[rows])


def test_each_slice_is_cached_under_its_own_key(folder, tmp_path, monkeypatch, caplog):
    lazy = D.open_lazy_split(folder, SPEC, cache_dir=tmp_path / 'c')
    with caplog.at_level(logging.INFO, logger='ghostnet_jax.data.sliced'):
        a = lazy.read_rows([(0, 7)])
        b = lazy.read_rows([(7, 14)])
        monkeypatch.setattr(images_lib, 'decode_file', lambda *_: 1 / 0)  # hits must not decode
        a2 = lazy.read_rows([(0, 7)])
    np.testing.assert_array_equal(a.images, a2.images)
    assert not np.array_equal(a.labels, b.labels)
    assert len(list((tmp_path / 'c').glob('*.npz'))) == 2
    assert [r.getMessage().split(': ', 1)[1] for r in caplog.records] == [
        'this process reads 7 of 14 rows (decoded)',
        'this process reads 7 of 14 rows (decoded)',
        'this process reads 7 of 14 rows (from cache)',
    ]


def test_to_ranges():
    assert to_ranges(np.array([0, 1, 2, 5, 6, 9])) == ((0, 3), (5, 7), (9, 10))
    assert to_ranges(np.zeros(0, int)) == ()


def test_stats_from_pieces_equal_channel_stats():
    rng = np.random.default_rng(0)
    split = D.ArraySplit(
        rng.integers(0, 256, (50, 7, 5, 3), dtype=np.uint8), np.zeros(50, np.int32), ('a',), 'x'
    )
    want = D.channel_stats(split)
    sums = (
        D.channel_sums(split.images[:13])
        + D.channel_sums(split.images[13:40])
        + D.channel_sums(split.images[40:])
    )
    for got in (stats_from_sums(sums), D.global_channel_stats(sums)):
        for g, w in zip(got, want):
            assert g.dtype == np.float32
            np.testing.assert_array_equal(g, w)
    # The cross-process encoding of the sums is exact for CIFAR-sized and larger totals.
    big = np.array([0, 1, 255 * 10**9, 65025 * 10**12, 2**62 + 12345], np.int64)
    np.testing.assert_array_equal(placement._from_limbs(placement._to_limbs(big)), big)


def test_device_data_from_a_lazy_split_equals_the_decoded_one(folder, tmp_path):
    full = D.load_split(folder, SPEC, cache_dir=tmp_path / 'c')
    lazy = D.open_lazy_split(folder, SPEC, cache_dir=tmp_path / 'c')
    mesh = jax.make_mesh((1,), ('data',), devices=jax.devices()[:1])
    mean, std = D.channel_stats(full)
    aug = D.AugmentConfig(crop_padding=1, flip=True)
    a = D.DeviceTrainData(full, mesh, 4, 3, aug, mean, std)
    b = D.DeviceTrainData(lazy, mesh, 4, 3, aug)  # statistics computed from the rows
    np.testing.assert_array_equal(b.mean, mean)
    np.testing.assert_array_equal(b.std, std)
    ea, eb = a.epoch(1), b.epoch(1)
    for step in range(a.steps_per_epoch):
        for k, v in a.batch(ea, step).items():
            np.testing.assert_array_equal(np.asarray(v), np.asarray(b.batch(eb, step)[k]))
    ea, eb = D.DeviceEvalData(full, mesh, 4, mean, std), D.DeviceEvalData(lazy, mesh, 4, mean, std)
    for i in range(ea.num_batches):
        for k, v in ea.batch(i).items():
            np.testing.assert_array_equal(np.asarray(v), np.asarray(eb.batch(i)[k]))
