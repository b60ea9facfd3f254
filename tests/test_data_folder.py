"""folder: sources — layout, labels, per-class TFDS slicing, cache, and the specific errors."""

import os

import numpy as np
import pytest
from PIL import Image

from ghostnet_jax import data as D
from ghostnet_jax.data import images as images_lib

# Class folder -> number of train images. Sorted class names: ant=0, cat=1, dog=2.
COUNTS = {'dog': 5, 'ant': 3, 'cat': 10}


def _value(label: int, index: int, jpeg: bool = False) -> int:
    # Unique per image; JPEG images get widely spaced values so lossy decoding can't confuse them.
    return 50 + 30 * index if jpeg else 20 * label + index


def _write_folder(root, split='train', counts=COUNTS, size=(6, 5), jpeg_class='dog'):
    for c, n in counts.items():
        label = sorted(counts).index(c)
        d = root / split / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = np.full((size[1], size[0], 3), _value(label, i, c == jpeg_class), np.uint8)
            if c == jpeg_class:  # Constant images survive JPEG almost exactly.
                Image.fromarray(arr).save(d / f'{i:04d}.jpg', quality=95)
            else:
                arr[0, 0] = (label, i, 7)  # Exact in PNG; lets the test identify the file.
                Image.fromarray(arr).save(d / f'{i:04d}.png')
    return root


@pytest.fixture
def folder(tmp_path):
    return _write_folder(tmp_path / 'ds')


def _ids(split):
    """(label, index) of each PNG example, read back from the marker pixel."""
    return [tuple(int(v) for v in x[0, 0, :2]) for x in split.images]


def test_layout_labels_and_decoding(folder, tmp_path):
    s = D.load_split(f'folder:{folder}', 'train', cache_dir=tmp_path / 'c')
    assert s.class_names == ('ant', 'cat', 'dog')
    assert s.images.shape == (18, 5, 6, 3) and s.images.dtype == np.uint8
    assert s.labels.dtype == np.int32
    np.testing.assert_array_equal(s.labels, [0] * 3 + [1] * 10 + [2] * 5)
    png = s.labels != 2
    # PNG pixels are exact: the marker pixel says which file, in sorted order.
    assert [i for i, y in zip(_ids(s), s.labels) if y != 2] == [(0, i) for i in range(3)] + [
        (1, i) for i in range(10)
    ]
    np.testing.assert_array_equal(
        s.images[png][:, 2, 3, 0],
        [_value(0, i) for i in range(3)] + [_value(1, i) for i in range(10)],
    )
    # JPEG is lossy: compare with the written value within a tolerance.
    jpg = s.images[~png].astype(int)
    expected = np.array([_value(2, i, jpeg=True) for i in range(5)])[:, None, None, None]
    assert np.abs(jpg - expected).max() <= 3
    assert s.name == f'folder:{folder} train'


@pytest.mark.parametrize(
    'spec,per_class',
    [
        # Hand-computed with TFDS's rule round(pct * n / 100) (Python round: half to even).
        # n = 3 (ant), 10 (cat), 5 (dog).
        ('train[:50%]', {0: range(0, 2), 1: range(0, 5), 2: range(0, 2)}),  # 1.5->2, 5, 2.5->2
        ('train[50%:]', {0: range(2, 3), 1: range(5, 10), 2: range(2, 5)}),
        ('train[:90%]', {0: range(0, 3), 1: range(0, 9), 2: range(0, 4)}),  # 2.7->3, 9, 4.5->4
        ('train[90%:]', {0: range(3, 3), 1: range(9, 10), 2: range(4, 5)}),
        ('train[1:3]', {0: range(1, 3), 1: range(1, 3), 2: range(1, 3)}),
        ('train[-2:]', {0: range(1, 3), 1: range(8, 10), 2: range(3, 5)}),
    ],
)
def test_per_class_slicing_matches_tfds_rule(folder, tmp_path, spec, per_class):
    s = D.load_split(f'folder:{folder}', spec, cache_dir=tmp_path / 'c')
    expected_labels = [c for c in sorted(per_class) for _ in per_class[c]]
    np.testing.assert_array_equal(s.labels, expected_labels)
    got = [i for i, y in zip(_ids(s), s.labels) if y != 2]  # dog is JPEG: marker not exact.
    assert got == [(c, i) for c in (0, 1) for i in per_class[c]]
    dog = s.images[s.labels == 2][:, 2, 2, 0].astype(int)
    assert (
        np.abs(dog - np.array([_value(2, i, jpeg=True) for i in per_class[2]])).max(initial=0) <= 3
    )


def test_train_and_validation_are_disjoint_and_complete(folder, tmp_path):
    tr = D.load_split(f'folder:{folder}', 'train[:80%]', cache_dir=tmp_path / 'c')
    va = D.load_split(f'folder:{folder}', 'train[80%:]', cache_dir=tmp_path / 'c')
    everything = D.load_split(f'folder:{folder}', 'train', cache_dir=tmp_path / 'c')
    assert len(tr) + len(va) == len(everything) == 18
    key = lambda s: sorted(x.tobytes() for x in s.images)
    assert not set(key(tr)) & set(key(va))
    assert sorted(key(tr) + key(va)) == key(everything)


def test_class_ids_shared_across_splits(tmp_path):
    root = _write_folder(tmp_path / 'ds', counts={'ant': 2, 'cat': 2, 'dog': 2})
    _write_folder(root, split='test', counts={'cat': 2, 'dog': 1})  # 'ant' missing in test.
    te = D.load_split(f'folder:{root}', 'test', cache_dir=tmp_path / 'c')
    assert te.class_names == ('ant', 'cat', 'dog')
    np.testing.assert_array_equal(te.labels, [1, 1, 2])


def test_cache_hit_skips_decoding_and_file_change_invalidates(folder, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    first = D.load_split(f'folder:{folder}', 'train[:50%]', cache_dir=cache)
    assert len(list(cache.glob('*.npz'))) == 1

    def no_decode(*a, **k):
        raise AssertionError('decoded although cached')

    monkeypatch.setattr(images_lib, 'decode_file', no_decode)
    second = D.load_split(f'folder:{folder}', 'train[:50%]', cache_dir=cache)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert second.class_names == first.class_names and second.name == first.name

    # The env var is the default cache location.
    monkeypatch.setenv('GHOSTNET_JAX_CACHE', str(cache))
    D.load_split(f'folder:{folder}', 'train[:50%]')

    # Rewriting a selected file changes size/mtime -> new key -> decoding again.
    f = folder / 'train' / 'ant' / '0000.png'
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(f)
    os.utime(f, ns=(1, 1))
    with pytest.raises(AssertionError, match='decoded although cached'):
        D.load_split(f'folder:{folder}', 'train[:50%]', cache_dir=cache)


def test_missing_split_folder(folder, tmp_path):
    with pytest.raises(D.SplitNotFoundError, match=r"test.*\['train'\]"):
        D.load_split(f'folder:{folder}', 'test', cache_dir=tmp_path / 'c')


def test_empty_class_folder(folder, tmp_path):
    (folder / 'train' / 'empty').mkdir()
    (folder / 'train' / 'empty' / 'notes.txt').write_text('not an image')
    with pytest.raises(D.EmptyClassError, match='empty'):
        D.load_split(f'folder:{folder}', 'train', cache_dir=tmp_path / 'c')


@pytest.mark.parametrize('content', [b'not an image at all', 'truncated'])
def test_corrupt_image_names_the_file(folder, tmp_path, content):
    bad = folder / 'train' / 'cat' / '0003.png'
    if content == 'truncated':
        content = bad.read_bytes()[:40]
    bad.write_bytes(content)
    with pytest.raises(D.CorruptImageError, match='0003.png'):
        D.load_split(f'folder:{folder}', 'train', cache_dir=tmp_path / 'c')


def test_mixed_sizes_error_and_resize_option(tmp_path):
    root = _write_folder(tmp_path / 'ds', counts={'ant': 2, 'cat': 2})
    Image.fromarray(np.full((9, 7, 3), 200, np.uint8)).save(root / 'train' / 'cat' / 'big.png')
    with pytest.raises(D.MixedImageSizeError, match='big.png.*image_size'):
        D.load_split(f'folder:{root}', 'train', cache_dir=tmp_path / 'c')
    s = D.load_split(f'folder:{root}', 'train', cache_dir=tmp_path / 'c', image_size=4)
    assert s.images.shape == (5, 4, 4, 3)
    # A constant image stays constant under bilinear resizing.
    assert (s.images[-1] == 200).all()


@pytest.mark.parametrize('source', ['cifar10', 'hub:cifar10', 'folder:', 'tfds:'])
def test_unknown_source(source):
    with pytest.raises(D.UnknownSourceError, match='tfds:NAME'):
        D.load_split(source, 'train')


def test_data_errors_are_value_errors():
    for cls in (
        D.SplitNotFoundError,
        D.EmptyClassError,
        D.CorruptImageError,
        D.MixedImageSizeError,
        D.UnknownDatasetError,
        D.DatasetNotAvailableError,
        D.BatchConfigError,
    ):
        assert issubclass(cls, D.DataError) and issubclass(cls, ValueError)
