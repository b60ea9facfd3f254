"""TensorBoard event file and metrics.jsonl of a finished run hold the documented metrics."""

import json
import re

import numpy as np
import train_harness as h
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

EXPECTED = {
    'train/loss',
    'train/accuracy',
    'train/learning_rate',
    'train/grad_norm',
    'train/update_param_ratio',
    'train/images_per_second',
    'train/epoch_time_s',
    'val/loss',
    'val/accuracy',
}


def test_tensorboard_and_metrics_jsonl_hold_the_expected_tags(base_run):
    acc = EventAccumulator(str(base_run / 'tensorboard'), size_guidance={'scalars': 0})
    acc.Reload()
    tags = set(acc.Tags()['scalars'])
    assert EXPECTED <= tags, EXPECTED - tags
    stages = {t for t in tags if re.fullmatch(r'train/grad_norm/stage\d+', t)}
    assert len(stages) >= 2, tags
    assert {'train/grad_norm/stem', 'train/grad_norm/head'} <= tags

    records = h.metrics(base_run)
    jsonl_tags = {
        f'{r["split"]}/{k}' for r in records for k in r if k not in ('step', 'epoch', 'split')
    }
    assert jsonl_tags == tags

    # One value per step / per epoch, equal in both files.
    for tag, steps in (
        ('train/loss', range(1, h.TOTAL_STEPS + 1)),
        ('train/grad_norm/stage1', range(1, h.TOTAL_STEPS + 1)),
        ('val/accuracy', range(h.STEPS_PER_EPOCH, h.TOTAL_STEPS + 1, h.STEPS_PER_EPOCH)),
        ('train/epoch_time_s', range(h.STEPS_PER_EPOCH, h.TOTAL_STEPS + 1, h.STEPS_PER_EPOCH)),
    ):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == list(steps), tag
        split, key = tag.split('/', 1)
        jsonl = {r['step']: r[key] for r in records if r['split'] == split and key in r}
        np.testing.assert_allclose(
            [e.value for e in events], [jsonl[s] for s in steps], rtol=1e-6, err_msg=tag
        )
    val = h.val_epochs(base_run)
    assert sorted(val) == list(range(1, h.EPOCHS + 1))
    assert all(0 <= r['accuracy'] <= 1 for r in val.values())
    lr = [e.value for e in acc.Scalars('train/learning_rate')]
    assert lr[0] == np.float32(0.05) and lr[-1] < lr[0]  # smoke.py: cosine from 0.05

    results = json.loads((base_run / 'results.json').read_text())
    assert results['val']['num_examples'] == h.VAL_EXAMPLES
    config = json.loads((base_run / 'config.json').read_text())
    assert config['num_epochs'] == h.EPOCHS and config['model']['name'] == 'ghostnet_cifar_tiny'
