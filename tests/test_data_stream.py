"""The streamed pipeline (data/stream.py) against the device-resident one, in process.

Both read the same generated data: a folder of PNGs of mixed sizes and a TFDS dataset
prepared as ArrayRecord without TensorFlow (a tiny GeneratorBasedBuilder: TFDS encodes
PIL images itself). Where both pipelines apply, the device pipeline is the reference:
the same (seed, epoch, step) must give bit-identical batches. Most streams decode in the
test process (workers=0): Grain's worker processes are spawned, and cost seconds each.
"""

import logging

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from crashing_rows import CrashOnRead
from PIL import Image

from ghostnet_jax import data as D
from ghostnet_jax.data import pipeline, stream
from ghostnet_jax.data.images import resize_and_centre_crop
from ghostnet_jax.training.parallel import make_mesh

SIZES = [(16, 16), (20, 14), (12, 18)]  # (H, W) of the folder's images, mixed on purpose
B = 4


class GhostnetStreamTiny(tfds.core.GeneratorBasedBuilder):
    """12 train / 6 test examples of mixed sizes; 'bad' holds one undecodable record."""

    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    'image': tfds.features.Image(shape=(None, None, 3), encoding_format='png'),
                    'label': tfds.features.ClassLabel(names=['a', 'b', 'c']),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {
            'train': self._generate_examples(12, 0),
            'test': self._generate_examples(6, 1),
            'bad': self._generate_examples(2, 2, corrupt=1),
        }

    def _generate_examples(self, n, seed, corrupt=None):
        rng = np.random.default_rng(seed)
        for i in range(n):
            h, w = SIZES[i % 3]
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8))
            yield i, {'image': b'not a png' if i == corrupt else image, 'label': i % 3}


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp('stream_data')
    GhostnetStreamTiny(
        data_dir=str(root / 'tfds'), file_format='array_record'
    ).download_and_prepare()
    rng = np.random.default_rng(0)
    for c in range(3):
        for i in range(6):
            d = root / 'folder' / 'train' / f'c{c}'
            d.mkdir(parents=True, exist_ok=True)
            h, w = SIZES[(c + i) % 3]
            Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(d / f'{i}.png')
    return {
        'folder': (f'folder:{root / "folder"}', None),
        'tfds': ('tfds:ghostnet_stream_tiny', str(root / 'tfds')),
    }


def _open(sources, kind, spec, **kwargs):
    source, data_dir = sources[kind]
    return D.open_lazy_split(source, spec, data_dir=data_dir, download=False, **kwargs)


def _batches(data, epochs, first=0):
    out = []
    for e in range(epochs):
        handle = data.epoch(e, first)
        out.append(
            [jax.device_get(data.batch(handle, k)) for k in range(first, data.steps_per_epoch)]
        )
        handle.close()
    return out


def _assert_same(a, b, what):
    assert jax.tree.structure(a) == jax.tree.structure(b), what
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.array_equal(x, y), what


@pytest.mark.parametrize('kind,spec', [('folder', 'train[:75%]'), ('tfds', 'train[:10]')])
def test_streamed_batches_equal_device_batches(sources, tmp_path, kind, spec):
    """Mixed-size images resized to 14x14: the statistics, augmented train batches (two
    epochs) and the eval batches, bit for bit. The folder's train batches are decoded in 2
    worker processes (the order must not depend on them; each spawn costs seconds, so one
    epoch), the rest in this process."""
    mesh, aug = make_mesh(), D.AugmentConfig(crop_padding=2)
    here = stream.StreamOptions(image_size=14, workers=0)
    eager = _open(sources, kind, spec, image_size=14, cache_dir=tmp_path).read_all()
    device = D.DeviceTrainData(eager, mesh, B, seed=3, augment=aug)
    split = _open(sources, kind, spec, image_size=14, streamed=True)
    mean, std = stream.stream_channel_stats(split, here, mesh)
    assert np.array_equal(mean, device.mean) and np.array_equal(std, device.std)
    epochs, workers = (1, 2) if kind == 'folder' else (2, 0)
    streamed = stream.StreamTrainData(
        split,
        mesh,
        B,
        seed=3,
        augment=aug,
        mean=mean,
        std=std,
        options=stream.StreamOptions(image_size=14, workers=workers),
    )
    _assert_same(_batches(streamed, epochs), _batches(device, epochs), f'{kind} train batches')

    rest = 'train[75%:]' if kind == 'folder' else 'test'
    val = _open(sources, kind, rest, image_size=14, cache_dir=tmp_path)
    want = list(D.DeviceEvalData(val.read_all(), mesh, B, device.mean, device.std))
    got = list(
        stream.StreamEvalData(
            _open(sources, kind, rest, image_size=14, streamed=True),
            mesh,
            B,
            device.mean,
            device.std,
            options=here,
        )
    )
    _assert_same(jax.device_get(got), jax.device_get(want), f'{kind} eval batches')


def test_resumed_epoch_continues_from_the_saved_iterator_state(sources):
    mesh, aug = make_mesh(), D.AugmentConfig()
    options = stream.StreamOptions(image_size=14, workers=0)
    data = stream.StreamTrainData(
        _open(sources, 'folder', 'train', streamed=True, image_size=14),
        mesh,
        B,
        seed=0,
        augment=aug,
        options=options,
    )
    whole = _batches(data, 1)[0]
    handle = data.epoch(0)
    for k in range(2):
        data.batch(handle, k)
    saved = handle.state()
    handle.close()
    assert saved['step'] == 2 and saved['grain'] == {'next_index': 2}, saved
    resumed = data.epoch(0, first=2, state=saved)
    assert resumed.state()['grain'] == saved['grain']
    _assert_same(
        [jax.device_get(data.batch(resumed, k)) for k in range(2, data.steps_per_epoch)],
        whole[2:],
        'resumed with the Grain state',
    )
    resumed.close()
    # A state from another setup (here: another worker count) resumes by position instead.
    other = dict(saved, workers=3)
    _assert_same(_batches(data, 1, first=2)[0], whole[2:], 'resumed by position')
    assert not stream.usable_state(other, {k: v for k, v in saved.items() if k != 'grain'})


def test_processes_read_disjoint_columns_that_cover_the_epoch():
    """Each process reads its columns of the device pipeline's permutation: together,
    every example of an epoch's steps * B exactly once."""
    n, batch, steps = 23, 8, 2
    halves = [stream.epoch_order(n, batch, steps, 5, 1, cols) for cols in ((0, 4), (4, 8))]
    both = np.concatenate(halves, axis=1)  # (steps, B): the global batches
    perm_key, _ = D.device.epoch_keys(5, 1)
    np.testing.assert_array_equal(
        both.ravel(), np.asarray(jax.random.permutation(perm_key, n))[: steps * batch]
    )
    assert len(np.unique(both)) == steps * batch
    assert stream.process_columns(make_mesh(), batch) == (0, batch)


def test_random_resized_crops_are_reproducible_and_eval_matches_predict(sources):
    """Mixed sizes without a square resize: random-resized crops (a pure function of seed,
    epoch and row), and the eval view is what predict applies to such a run."""
    from ghostnet_jax.serving.preprocessing import Preprocessing
    from ghostnet_jax.training.model_spec import ModelSpec

    split = _open(sources, 'folder', 'train', streamed=True, image_size=12)
    options = stream.StreamOptions(
        image_size=12, workers=0, random_resized_crop=True, eval_crop_pct=0.75
    )
    mesh, no_aug = make_mesh(), D.AugmentConfig(crop_padding=0, flip=False)
    first, again = (
        stream.StreamTrainData(
            split, mesh, B, seed=1, augment=no_aug, options=options, mean=(0, 0, 0), std=(1, 1, 1)
        )
        for _ in range(2)
    )
    a, b = _batches(first, 2), _batches(again, 1)
    _assert_same(a[0], b[0], 'the same crops from the same (seed, epoch)')
    assert a[0][0]['image'].shape == (B, 12, 12, 3)
    assert not np.array_equal(a[0][0]['image'], a[1][0]['image'])
    view = options.view(split, train=False)
    spec = ModelSpec(
        'ghostnet_cifar_tiny',
        3,
        ('c0', 'c1', 'c2'),
        (12, 12, 3),
        (0, 0, 0),
        (1, 1, 1),
        resize=12,
        eval_crop_pct=0.75,
    )
    path = split.rows.describe(1)
    image = np.asarray(Image.open(path).convert('RGB'))
    np.testing.assert_array_equal(
        view.apply(image, None, path), resize_and_centre_crop(image, 12, 0.75)
    )
    np.testing.assert_array_equal(
        view.apply(image, None, path), Preprocessing.for_run(spec).load_image(path)
    )


def test_mixed_sizes_without_a_size_name_the_file(sources):
    split = _open(sources, 'folder', 'train', streamed=True)
    data = stream.StreamTrainData(
        split,
        make_mesh(),
        B,
        seed=0,
        augment=D.AugmentConfig(),
        mean=(0, 0, 0),
        std=(1, 1, 1),
        options=stream.StreamOptions(workers=0),
    )
    handle = data.epoch(0)
    with pytest.raises(D.MixedImageSizeError, match=r'\.png is \(.*data\.image_size'):
        for k in range(data.steps_per_epoch):
            data.batch(handle, k)
    handle.close()


def test_corrupt_files_are_named_skipped_and_a_dead_worker_names_its_files(
    sources, tmp_path, caplog
):
    bad = tmp_path / 'bad' / 'train'
    for c in range(3):
        (bad / f'c{c}').mkdir(parents=True)
        for i in range(4):
            noise = np.random.default_rng(4 * c + i).integers(0, 256, (8, 8, 3), np.uint8)
            Image.fromarray(noise).save(bad / f'c{c}' / f'{i}.png')
    (bad / 'c1' / '2.png').write_bytes(b'not a png')
    source = f'folder:{bad.parent}'
    mesh, aug = make_mesh(), D.AugmentConfig(crop_padding=0)
    split = D.open_lazy_split(source, 'train', streamed=True, cache_dir=tmp_path / 'c')
    # The statistics read every row first: decoded in a worker process, the error keeps its
    # type and names the file.
    with pytest.raises(D.CorruptImageError, match=r'c1/2\.png.*skip_corrupt_images'):
        stream.StreamTrainData(
            split, mesh, B, seed=0, augment=aug, options=stream.StreamOptions(workers=1)
        )
    # Skipped: the same rows as the device pipeline (logged by name), nothing held whole.
    with caplog.at_level(logging.WARNING):
        kept = D.open_lazy_split(
            source, 'train', streamed=True, cache_dir=tmp_path / 'c', skip_corrupt_images=True
        )
    assert 'c1/2.png' in caplog.text and not list((tmp_path / 'c').glob('*.npz'))
    eager = D.load_split(source, 'train', cache_dir=tmp_path / 'c2', skip_corrupt_images=True)
    assert kept.rows.files == tuple(
        f'{bad}/c{c}/{i}.png'
        for c, i in [
            (0, 0),
            (1, 0),
            (2, 0),
            (0, 1),
            (1, 1),
            (2, 1),
            (0, 2),
            (2, 2),
            (0, 3),
            (1, 3),
            (2, 3),
        ]
    )
    data = stream.StreamTrainData(
        kept, mesh, B, seed=0, augment=aug, options=stream.StreamOptions(workers=0)
    )
    _assert_same(
        _batches(data, 1),
        _batches(D.DeviceTrainData(eager, mesh, B, seed=0, augment=aug), 1),
        'skipped',
    )
    # A worker that dies (no exception to report) is an error naming the batch's files.
    kept.rows = CrashOnRead(kept.rows.files, kept.rows.labels)
    crashing = stream.StreamTrainData(
        kept,
        mesh,
        B,
        seed=0,
        augment=aug,
        mean=(0, 0, 0),
        std=(1, 1, 1),
        options=stream.StreamOptions(workers=1),
    )
    handle = crashing.epoch(0)
    with pytest.raises(stream.DataWorkerError, match=r'died.*batch 0.*\.png.*Nothing saved'):
        crashing.batch(handle, 0)
    handle.close()


def test_a_corrupt_tfds_record_is_named(sources):
    split = _open(sources, 'tfds', 'bad', streamed=True)
    errors = []
    for row in range(len(split)):  # TFDS orders the records by a hash of their keys
        try:
            split.rows.read(row)
        except D.CorruptImageError as e:
            errors.append((row, str(e)))
    assert len(errors) == 1 and f'ghostnet_stream_tiny bad record {errors[0][0]}' in errors[0][1]
    assert 'prepare_data' in errors[0][1]


def test_auto_chooses_by_the_splits_bytes_and_says_why(sources):
    splits = {'train': _open(sources, 'folder', 'train', streamed=True, image_size=10), 'val': None}
    size = 18 * 10 * 10 * 3  # 5400 bytes of uint8
    fits = pipeline.choose('auto', splits, 10, 0.25, memory=(4 * size, 'a test device'))
    assert fits.pipeline == 'device' and 'within 0.25 of a test device' in fits.reason
    over = pipeline.choose('auto', splits, 10, 0.25, memory=(4 * size - 1, 'a test device'))
    assert over.pipeline == 'stream' and 'more than 0.25' in over.reason
    assert pipeline.choose('auto', splits, 10, 0.25, random_resized_crop=True).pipeline == 'stream'
    assert pipeline.choose('device', splits, 10, 0.25).pipeline == 'device'
