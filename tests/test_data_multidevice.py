"""Batches must not depend on the device count: 1 vs 8 (fake CPU) devices.

XLA_FLAGS must be set before jax is imported, so the checks run in a
subprocess that executes this file as a script with 8 host devices; inside it,
1-device meshes use jax.devices()[:1].
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import train_harness as h

REPO = Path(__file__).resolve().parents[1]


def _checks():
    import jax
    import numpy as np
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    from ghostnet_jax import data as D

    assert jax.device_count() == 8, jax.devices()

    def meshes(kind):
        make = (
            (lambda d: jax.make_mesh((len(d),), ('data',), devices=d))
            if kind == 'explicit'
            else (lambda d: Mesh(np.array(d), ('data',)))
        )
        return make(jax.devices()[:1]), make(jax.devices())

    rng = np.random.default_rng(0)
    n = 70  # Not a multiple of 8: the stored rows are padded, which must not show.
    split = D.ArraySplit(
        rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
        np.arange(n, dtype=np.int32),
        tuple(map(str, range(n))),
        'synthetic',
    )
    mean, std = D.channel_stats(split)
    aug = D.AugmentConfig(crop_padding=2, padding_mode='reflect', flip=True, cutout=3)

    for kind in ('explicit', 'auto'):
        one, eight = meshes(kind)
        a = D.DeviceTrainData(split, one, 16, seed=7, augment=aug, mean=mean, std=std)
        b = D.DeviceTrainData(split, eight, 16, seed=7, augment=aug, mean=mean, std=std)
        for epoch in (0, 3):
            ea, eb = a.epoch(epoch), b.epoch(epoch)
            assert eb.images.sharding.spec == P(None, 'data'), eb.images.sharding
            for step in range(a.steps_per_epoch):
                x, y = a.batch(ea, step), b.batch(eb, step)
                assert (
                    y['image'].sharding.spec == P('data')
                    and len(y['image'].sharding.device_set) == 8
                )
                assert (
                    len(y['image'].addressable_shards) == 8
                    and y['image'].addressable_shards[0].data.shape[0] == 2
                )
                np.testing.assert_array_equal(np.asarray(x['label']), np.asarray(y['label']))
                np.testing.assert_array_equal(np.asarray(x['image']), np.asarray(y['image']))
        print(f'{kind}: train batches identical on 1 and 8 devices')

        if kind == 'explicit':  # once: both kinds share the code, and it compiles slowly
            _check_new_augmentations(split, one, eight, mean, std)
            print(f'{kind}: TrivialAugment, erasing, mixup/cutmix batches identical on 1 and 8')

        for m, b_size in ((37, 8), (37, 16), (5, 8), (64, 32)):
            sub = D.ArraySplit(
                split.images[:m], split.labels[:m] % 10, tuple(map(str, range(10))), 'eval'
            )
            results = []
            for mesh in (one, eight):
                data = D.DeviceEvalData(sub, mesh, b_size, mean, std)
                seen, labels = [], []
                for i in range(data.num_batches):
                    batch = data.batch(i)
                    mask = np.asarray(batch['mask']).astype(bool)
                    seen.extend(np.arange(i * b_size, (i + 1) * b_size)[mask])
                    labels.extend(np.asarray(batch['label'])[mask])
                assert seen == list(range(m)), (m, b_size, seen)
                np.testing.assert_array_equal(labels, sub.labels)
                results.append(D.evaluate(data, lambda x: x.reshape(x.shape[0], -1)[:, :10], 10))
            r1, r8 = results
            assert r1['num_examples'] == r8['num_examples'] == m
            assert r1['correct'] == r8['correct']
            np.testing.assert_array_equal(
                r1['per_class_count'], np.bincount(sub.labels, minlength=10)
            )
            np.testing.assert_array_equal(r1['per_class_correct'], r8['per_class_correct'])
            np.testing.assert_allclose(r1['loss'], r8['loss'], rtol=1e-6)
        print(f'{kind}: evaluation exact once on 1 and 8 devices')

        _check_process_slices(split, eight, mean, std)
        print(f'{kind}: per-process slices decode disjoint rows and rebuild the arrays')

        try:
            D.DeviceTrainData(split, eight, 12, seed=0, augment=aug, mean=mean, std=std)
        except D.BatchConfigError as e:
            assert '12' in str(e) and 'multiple of 8' in str(e), e
        else:
            raise AssertionError('batch 12 on 8 devices was accepted')
        try:
            D.DeviceEvalData(split, eight, 4, mean, std)
        except D.BatchConfigError as e:
            assert 'multiple of 8' in str(e), e
        else:
            raise AssertionError('eval batch 4 on 8 devices was accepted')
    print('ALL OK')


def _check_new_augmentations(split, one, eight, mean, std):
    """TrivialAugment-Wide, random erasing, mixup and cutmix: same batch on 1 and 8 devices,
    soft targets sharded like the images and summing to one."""
    import numpy as np
    from jax.sharding import PartitionSpec as P

    from ghostnet_jax import data as D

    aug = D.AugmentConfig(
        crop_padding=2,
        trivial_augment=True,
        random_erasing=0.5,
        mixup_alpha=1.0,
        cutmix_alpha=1.0,
        mix_prob=0.9,
    )
    labelled = D.ArraySplit(split.images, split.labels % 10, tuple(map(str, range(10))), 'mix')
    a = D.DeviceTrainData(labelled, one, 16, seed=5, augment=aug, mean=mean, std=std)
    b = D.DeviceTrainData(labelled, eight, 16, seed=5, augment=aug, mean=mean, std=std)
    ea, eb = a.epoch(2), b.epoch(2)
    for step in range(a.steps_per_epoch):
        x, y = a.batch(ea, step), b.batch(eb, step)
        assert y['label'].shape == (16, 10) and y['label'].sharding.spec == P('data')
        np.testing.assert_allclose(np.asarray(y['label']).sum(-1), 1.0, rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(x['label']), np.asarray(y['label']))
        # Every draw and every uint8 op is identical; the float mixup arithmetic after
        # normalization may be fused differently by the 8-way partitioner (1 ulp apart).
        np.testing.assert_allclose(
            np.asarray(x['image']), np.asarray(y['image']), rtol=0, atol=1e-6
        )


def _check_process_slices(split, mesh, mean, std):
    """Poses as two processes of 4 devices each: each decodes only the rows its devices
    hold, their pieces rebuild the single-host arrays and their statistics add up."""
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from ghostnet_jax import data as D
    from ghostnet_jax.data.arrays import stats_from_sums

    reads = []

    def decode(ranges):
        reads.append(ranges)
        return split.read_rows(ranges)

    lazy = D.LazySplit('lazy', len(split), split.class_names, split.image_shape, decode)
    devices = list(mesh.devices.flat)
    procs = (devices[:4], devices[4:])
    train = D.DeviceTrainData(
        split, mesh, 16, seed=0, augment=D.AugmentConfig(), mean=mean, std=std
    )
    n, b = len(split), 16
    nb = -(-n // b)
    layouts = (
        (NamedSharding(mesh, P('data')), np.arange(72), (train._images, train._labels)),
        (
            NamedSharding(mesh, P(None, 'data')),
            np.arange(nb * b).reshape(nb, b),
            (lambda e: (e._images, e._labels))(D.DeviceEvalData(split, mesh, b, mean, std)),
        ),
    )
    for sharding, rows, arrays in layouts:
        reads.clear()
        local = [D.LocalRows(lazy, sharding, rows, devices=p) for p in procs]
        decoded = [np.concatenate([np.arange(a, z) for a, z in r]) for r in reads]
        assert len(decoded) == 2 and not set(decoded[0]) & set(decoded[1]), reads
        assert sorted(np.concatenate(decoded)) == list(range(n)), reads
        assert 0 < len(decoded[0]) < n and 0 < len(decoded[1]) < n
        for array, which in zip(arrays, (0, 1)):
            for shard in array.addressable_shards:
                owner = local[0] if shard.device in procs[0] else local[1]
                want = owner.take(rows[shard.index[: rows.ndim]])[which]
                np.testing.assert_array_equal(np.asarray(shard.data), want)
        got = stats_from_sums(local[0].owned_sums() + local[1].owned_sums())
        for g, w in zip(got, (mean, std)):
            np.testing.assert_array_equal(g, w)


@h.job('data_multidevice')
def job_data_multidevice(t: h.Trainer, root: Path) -> tuple[subprocess.CompletedProcess, float]:
    """This file's checks in an 8-device process, in the background: (process, seconds)."""
    env = dict(
        os.environ,
        # The suite's unoptimized code generation (train_harness.XLA_TEST_FLAGS): this
        # script's compiles took 29 CPU-s optimized, 20 at -O0.
        XLA_FLAGS=f'--xla_force_host_platform_device_count=8 {h.XLA_TEST_FLAGS}',
        JAX_PLATFORMS='cpu',
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]),
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, __file__], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    return proc, time.monotonic() - start


def test_one_and_eight_devices_agree(trainer):
    proc, seconds = trainer.result('data_multidevice')
    assert proc.returncode == 0 and 'ALL OK' in proc.stdout, (
        f'8-device checks failed:\n{proc.stdout}\n{proc.stderr[-5000:]}'
    )
    print(proc.stdout, f'({seconds:.1f} s)')


if __name__ == '__main__':
    _checks()
