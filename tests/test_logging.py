import io
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ghostnet_jax.training.metrics_log import MetricsWriter, Progress


def _scalars(logdir):
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}


def test_scalars_round_trip_through_event_file_and_jsonl(tmp_path):
    with MetricsWriter(tmp_path, enabled=True) as w:
        w.write_scalars(
            10,
            {'loss': jnp.float32(2.5), 'accuracy': 0.25, 'grad_norm/stage1': np.float64(0.75)},
            'train',
            epoch=0,
        )
        w.write_scalars(20, {'loss': 1.5, 'learning_rate': 0.1}, 'train', epoch=1)
        w.write_scalars(20, {'loss': float('nan'), 'accuracy': 0.5}, 'val', epoch=1)
    tb = _scalars(tmp_path / 'tensorboard')
    assert set(tb) == {
        'train/loss',
        'train/accuracy',
        'train/grad_norm/stage1',
        'train/learning_rate',
        'val/loss',
        'val/accuracy',
    }
    assert tb['train/loss'] == [(10, 2.5), (20, 1.5)]
    assert tb['train/grad_norm/stage1'] == [(10, 0.75)]
    assert tb['val/accuracy'] == [(20, 0.5)]
    assert math.isnan(tb['val/loss'][0][1])

    lines = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert lines == [
        {
            'step': 10,
            'epoch': 0,
            'split': 'train',
            'loss': 2.5,
            'accuracy': 0.25,
            'grad_norm/stage1': 0.75,
        },
        {
            'step': 20,
            'epoch': 1,
            'split': 'train',
            'loss': 1.5,
            'learning_rate': pytest.approx(0.1),
        },
        {'step': 20, 'epoch': 1, 'split': 'val', 'loss': None, 'accuracy': 0.5},
    ]


def test_resume_appends_to_jsonl(tmp_path):
    for step in (1, 2):
        with MetricsWriter(tmp_path, enabled=True) as w:
            w.write_scalars(step, {'loss': step}, 'train')
    assert [
        json.loads(l)['step'] for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()
    ] == [1, 2]


def test_hparams_and_disabled_writer(tmp_path):
    with MetricsWriter(tmp_path / 'a', enabled=True) as w:
        w.write_hparams(
            {
                'optimizer.name': 'sgd',
                'optimizer.learning_rate': 0.1,
                'boundaries': (3, 6),
                'x': None,
            },
            {'val_accuracy': 0.9},
        )
    assert _scalars(tmp_path / 'a' / 'tensorboard' / 'hparams') == {
        'final/val_accuracy': [(0, pytest.approx(0.9))]
    }
    with MetricsWriter(tmp_path / 'b', enabled=False) as w:
        w.write_scalars(1, {'loss': 1.0}, 'train')
        w.write_hparams({'a': 1}, {'m': 1.0})
    assert not (tmp_path / 'b').exists()


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_plain_lines_every_n_steps():
    out, clock = io.StringIO(), FakeClock()
    p = Progress(
        steps_per_epoch=10,
        num_epochs=2,
        batch_size=32,
        stream=out,
        is_tty=False,
        every_steps=4,
        every_seconds=1e9,
        enabled=True,
        clock=clock,
    )
    p.start_epoch(1)
    for step in range(1, 11):
        clock.t += 0.5  # 0.5 s per step -> 64 img/s
        p.update(step, {'loss': jnp.float32(1.25), 'accuracy': 0.5})
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and '\r' not in out.getvalue()  # steps 4, 8 and the last one
    assert (
        lines[0] == 'epoch 1/2 | step 4/10 | loss 1.2500 | acc 0.5000 | 64.0 img/s | '
        'ETA 0:00:03 (total 0:00:08)'
    )
    assert (
        lines[2].startswith('epoch 1/2 | step 10/10') and 'ETA 0:00:00 (total 0:00:05)' in lines[2]
    )


def test_progress_plain_lines_every_seconds():
    out, clock = io.StringIO(), FakeClock()
    p = Progress(
        100,
        1,
        8,
        stream=out,
        is_tty=False,
        every_steps=1000,
        every_seconds=10.0,
        enabled=True,
        clock=clock,
    )
    p.start_epoch(1)
    for step in range(1, 31):
        clock.t += 1.0
        p.update(step, {'loss': 0.0})
    assert [l.split(' | ')[1] for l in out.getvalue().splitlines()] == [
        'step 10/100',
        'step 20/100',
        'step 30/100',
    ]


def test_progress_tty_rewrites_one_line():
    out, clock = io.StringIO(), FakeClock()
    p = Progress(3, 1, 4, stream=out, is_tty=True, enabled=True, clock=clock)
    p.start_epoch(1)
    for step in (1, 2, 3):
        clock.t += 1.0
        p.update(step, {'loss': 1.0})
    p.write('epoch 1 done')
    text = out.getvalue()
    assert text.count('\r') == 3 and text.count('\n') == 2 and text.endswith('epoch 1 done\n')


def test_remote_workdir_mirrors_jsonl_and_uploads_it_whole(tmp_path):
    # An object store cannot append: the writer appends to a local mirror seeded from the
    # existing remote file and uploads the whole file on flush. Emulated on a local folder.
    from ghostnet_jax.training.metrics_log import MetricsWriter, is_remote

    assert is_remote('gs://bucket/run') and not is_remote(tmp_path)
    (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "split": "train", "loss": 3.0}\n')
    w = MetricsWriter(tmp_path, enabled=True, remote=True)
    w.write_scalars(2, {'loss': 2.0}, 'train')
    assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 1  # not yet uploaded
    w.flush()
    lines = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert [(r['step'], r['loss']) for r in lines] == [(1, 3.0), (2, 2.0)]
    mirror = w._mirror_dir
    w.close()
    assert not mirror.exists()


def test_a_changed_config_is_saved_beside_the_first_and_its_changes_named(tmp_path, caplog):
    import ml_collections
    from etils import epath

    from ghostnet_jax.training.metrics_log import write_run_config

    workdir = epath.Path(tmp_path)
    first = ml_collections.ConfigDict({'optimizer': {'learning_rate': 0.1}, 'seed': 0})
    write_run_config(workdir, first)
    write_run_config(workdir, first)  # the same config again (a plain resume): no new file
    assert sorted(p.name for p in tmp_path.iterdir()) == ['config.json']
    changed = ml_collections.ConfigDict(
        {'optimizer': {'learning_rate': 0.05, 'name': 'adamw'}, 'seed': 0}
    )
    with caplog.at_level('WARNING'):
        write_run_config(workdir, changed)
    saved = [p for p in tmp_path.iterdir() if p.name != 'config.json']
    assert len(saved) == 1 and json.loads(saved[0].read_text())['optimizer']['name'] == 'adamw'
    assert json.loads((tmp_path / 'config.json').read_text()) == first.to_dict()  # kept
    message = caplog.text
    assert 'optimizer.learning_rate: 0.1 -> 0.05' in message
    assert 'optimizer.name: absent -> adamw' in message and 'seed' not in message
