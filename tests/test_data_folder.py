"""folder: sources — layout, labels, interleaved order and TFDS slicing, cache, skipping
unreadable files, and the specific errors."""

import logging
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


# The interleaved order of the 18 train files, hand-computed: file i of a class with n files
# sits at (i + 0.5) / n (ties: class ant < cat < dog), e.g. cat0 .05, dog0 .1, cat1 .15,
# ant0 .167, cat2 .25, dog1 .3, ..., ant1 .5 = dog2 .5, ..., cat9 .95.
ORDER = [
    (1, 0),
    (2, 0),
    (1, 1),
    (0, 0),
    (1, 2),
    (2, 1),
    (1, 3),
    (1, 4),
    (0, 1),
    (2, 2),
    (1, 5),
    (1, 6),
    (2, 3),
    (1, 7),
    (0, 2),
    (1, 8),
    (2, 4),
    (1, 9),
]


def _check_rows(s, expected):
    """Labels of every row, the marker pixel of PNG rows and the value of JPEG rows."""
    np.testing.assert_array_equal(s.labels, [c for c, _ in expected])
    assert [i for i, y in zip(_ids(s), s.labels) if y != 2] == [e for e in expected if e[0] != 2]
    dog = s.images[s.labels == 2][:, 2, 2, 0].astype(int)
    want = np.array([_value(2, i, jpeg=True) for c, i in expected if c == 2])
    assert dog.shape == want.shape and np.abs(dog - want).max(initial=0) <= 3


def test_layout_labels_and_decoding(folder, tmp_path):
    s = D.load_split(f'folder:{folder}', 'train', cache_dir=tmp_path / 'c')
    assert s.class_names == ('ant', 'cat', 'dog')
    assert s.images.shape == (18, 5, 6, 3) and s.images.dtype == np.uint8
    assert s.labels.dtype == np.int32
    _check_rows(s, ORDER)
    # PNG pixels are exact: the constant value identifies the file too.
    png = s.labels != 2
    np.testing.assert_array_equal(
        s.images[png][:, 2, 3, 0], [_value(c, i) for c, i in ORDER if c != 2]
    )
    assert s.name == f'folder:{folder} train'


@pytest.mark.parametrize(
    'spec,rows',
    [
        # TFDS's rule on the whole split (N = 18): round(pct * 18 / 100), Python round
        # (half to even); absolute bounds count examples, not examples per class.
        ('train[:50%]', range(0, 9)),  # 9.0
        ('train[50%:]', range(9, 18)),
        ('train[:90%]', range(0, 16)),  # 16.2 -> 16
        ('train[90%:]', range(16, 18)),
        ('train[:25%]', range(0, 4)),  # 4.5 -> 4
        ('train[1:3]', range(1, 3)),
        ('train[:10]', range(0, 10)),
        ('train[-2:]', range(16, 18)),
        ('train[5:7]+train[:1]', [5, 6, 0]),
    ],
)
def test_slices_follow_tfds_on_the_interleaved_order(folder, tmp_path, spec, rows):
    s = D.load_split(f'folder:{folder}', spec, cache_dir=tmp_path / 'c')
    assert len(s) == len(rows)
    _check_rows(s, [ORDER[r] for r in rows])


def test_slices_are_balanced(tmp_path):
    # 3 equally large classes: every slice is round-robin, so class counts differ by <= 1.
    root = _write_folder(tmp_path / 'ds', counts={'ant': 10, 'cat': 10, 'dog': 10}, jpeg_class=None)
    for spec, counts in (
        ('train[:5]', [2, 2, 1]),
        ('train[:80%]', [8, 8, 8]),
        ('train[80%:]', [2, 2, 2]),
        ('train[10:20]', [3, 4, 3]),  # rows 10..19: r % 3
        ('train[:50%]', [5, 5, 5]),
    ):
        s = D.load_split(f'folder:{root}', spec, cache_dir=tmp_path / 'c')
        assert np.bincount(s.labels, minlength=3).tolist() == counts, spec


def test_imbalanced_percent_slices_are_stratified(folder, tmp_path):
    tr = D.load_split(f'folder:{folder}', 'train[:50%]', cache_dir=tmp_path / 'c')
    va = D.load_split(f'folder:{folder}', 'train[50%:]', cache_dir=tmp_path / 'c')
    # Halves of 3 / 10 / 5 files: 2 + 1, 5 + 5, 2 + 3 (each within 1 of n / 2).
    assert np.bincount(tr.labels, minlength=3).tolist() == [2, 5, 2]
    assert np.bincount(va.labels, minlength=3).tolist() == [1, 5, 3]


def test_unsatisfiable_spec_names_the_split_size(folder, tmp_path):
    with pytest.raises(D.InvalidSplitSpecError, match="'train' has 18 examples"):
        D.load_split(f'folder:{folder}', 'train[:19]', cache_dir=tmp_path / 'c')
    with pytest.raises(D.InvalidSplitSpecError, match='train'):
        D.load_split(f'folder:{folder}', 'train[::2]', cache_dir=tmp_path / 'c')


def test_train_and_validation_are_disjoint_and_complete(folder, tmp_path):
    tr = D.load_split(f'folder:{folder}', 'train[:80%]', cache_dir=tmp_path / 'c')
    va = D.load_split(f'folder:{folder}', 'train[80%:]', cache_dir=tmp_path / 'c')
    everything = D.load_split(f'folder:{folder}', 'train', cache_dir=tmp_path / 'c')
    assert (len(tr), len(va)) == (14, 4)  # round(0.8 * 18) = round(14.4)
    assert len(tr) + len(va) == len(everything) == 18
    key = lambda s: sorted(x.tobytes() for x in s.images)
    assert not set(key(tr)) & set(key(va))
    assert sorted(key(tr) + key(va)) == key(everything)


def test_class_ids_shared_across_splits(tmp_path):
    root = _write_folder(tmp_path / 'ds', counts={'ant': 2, 'cat': 2, 'dog': 2})
    _write_folder(root, split='test', counts={'cat': 2, 'dog': 1})  # 'ant' missing in test.
    te = D.load_split(f'folder:{root}', 'test', cache_dir=tmp_path / 'c')
    assert te.class_names == ('ant', 'cat', 'dog')
    np.testing.assert_array_equal(te.labels, [1, 2, 1])  # cat0 .25, dog0 .5, cat1 .75


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


def _damage(folder):
    """Two unreadable files: cat 0003 (not an image at all) and dog 0001 (a truncated JPEG)."""
    (folder / 'train' / 'cat' / '0003.png').write_bytes(b'not an image at all')
    jpg = folder / 'train' / 'dog' / '0001.jpg'
    jpg.write_bytes(jpg.read_bytes()[:200])
    return [(1, 3), (2, 1)]


def test_skip_corrupt_images_leaves_them_out_and_logs_them(folder, tmp_path, caplog, monkeypatch):
    bad = _damage(folder)
    with pytest.raises(D.CorruptImageError, match='0001.jpg|0003.png'):
        D.load_split(f'folder:{folder}', 'train', cache_dir=tmp_path / 'c')
    with caplog.at_level(logging.WARNING):
        s = D.load_split(
            f'folder:{folder}', 'train', cache_dir=tmp_path / 'c', skip_corrupt_images=True
        )
    _check_rows(s, [o for o in ORDER if o not in bad])
    summary = [r.getMessage() for r in caplog.records if 'skipped 2 unreadable' in r.getMessage()]
    assert len(summary) == 1 and 'cat/0003.png' in summary[0] and 'dog/0001.jpg' in summary[0]
    # The slice is taken first, then unreadable files are left out: train[:8] holds
    # ORDER[0:8], of which cat 0003 (row 6) is unreadable.
    head = D.load_split(
        f'folder:{folder}', 'train[:8]', cache_dir=tmp_path / 'c', skip_corrupt_images=True
    )
    _check_rows(head, [o for o in ORDER[:8] if o not in bad])
    # The list of unreadable files and the decoded split are cached: nothing is decoded again,
    # neither eagerly nor through the lazy path of multi-process runs.
    monkeypatch.setattr(images_lib, 'decode_file', lambda *_: 1 / 0)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = D.load_split(
            f'folder:{folder}', 'train', cache_dir=tmp_path / 'c', skip_corrupt_images=True
        )
    np.testing.assert_array_equal(again.images, s.images)
    assert any('skipped 2 unreadable' in r.getMessage() for r in caplog.records)
    lazy = D.open_lazy_split(
        f'folder:{folder}', 'train', cache_dir=tmp_path / 'c', skip_corrupt_images=True
    )
    assert len(lazy) == 16
    np.testing.assert_array_equal(lazy.read_all().labels, s.labels)


def test_skip_corrupt_images_is_a_data_config_field():
    from ghostnet_jax.configs import default

    assert default.get_config().data.skip_corrupt_images is False


@pytest.mark.parametrize('damage', ['half', 'empty', 'garbage'])
def test_damaged_cache_entry_is_rebuilt_with_a_warning(folder, tmp_path, caplog, damage):
    cache = tmp_path / 'c'
    first = D.load_split(f'folder:{folder}', 'train[:50%]', cache_dir=cache)
    (entry,) = cache.glob('*.npz')
    data = entry.read_bytes()
    entry.write_bytes(
        {'half': data[: len(data) // 2], 'empty': b'', 'garbage': b'PK\x03\x04' + bytes(100)}[
            damage
        ]
    )
    with caplog.at_level(logging.WARNING, logger='ghostnet_jax.data.cache'):
        second = D.load_split(f'folder:{folder}', 'train[:50%]', cache_dir=cache)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert any(
        entry.name in r.getMessage() and 'unreadable' in r.getMessage() for r in caplog.records
    )
    # Rebuilt whole under the same name.
    with np.load(entry) as z:
        np.testing.assert_array_equal(z['images'], first.images)


def test_skip_corrupt_images_when_nothing_is_readable_is_an_error(tmp_path):
    root = _write_folder(tmp_path / 'ds', counts={'ant': 2}, jpeg_class=None)
    for f in (root / 'train' / 'ant').iterdir():
        f.write_bytes(b'junk')
    with pytest.raises(D.CorruptImageError, match='none of its 2 files'):
        D.load_split(f'folder:{root}', 'train', cache_dir=tmp_path / 'c', skip_corrupt_images=True)
