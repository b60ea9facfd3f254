"""`python -m ghostnet_jax.sweep`: the table, the best row, resuming, and --vectorize giving
the same per-run results as the same runs trained one by one."""
import csv
import subprocess
import sys

import numpy as np
import pytest
import study_harness as s
import train_harness as h

GRID = ('--grid=optimizer.learning_rate=0.02,0.08', '--grid=seed=0,1')
RUNS = ['learning_rate=0.02,seed=0', 'learning_rate=0.02,seed=1',
        'learning_rate=0.08,seed=0', 'learning_rate=0.08,seed=1']

# Dropout rate, weight decay and label smoothing all varying at once, vectorized vs the
# trainer itself (train_and_evaluate), in one process.
MIXED_SCRIPT = """
import json, sys
from ghostnet_jax.configs import smoke
from ghostnet_jax.study.vectorized import train_vectorized
from ghostnet_jax.training.trainer import train_and_evaluate
data, cache, root = sys.argv[1:]
configs = []
for dropout, wd, ls in ((0.0, 0.0, 0.0), (0.3, 1e-3, 0.1)):
    c = smoke.get_config()
    c.data.source, c.data.cache_dir, c.model.conv_impl = 'folder:' + data, cache, 'native'
    c.model.dropout_rate, c.optimizer.weight_decay, c.label_smoothing = dropout, wd, ls
    configs.append(c)
train_vectorized(configs, [f'{root}/vec{i}' for i in range(2)])
for i, c in enumerate(configs):
    train_and_evaluate(c, f'{root}/one{i}')
"""


@h.background('study_sweeps')
def _sweeps(root):
    cli = s.Cli(root)
    one = cli.start('sweep', f'--workdir={root / "one"}', *GRID, log='one')
    vec = cli.start('sweep', f'--workdir={root / "vec"}', *GRID, '--vectorize', log='vec')
    mixed = subprocess.Popen([sys.executable, '-c', MIXED_SCRIPT, str(cli.data),
                              str(cli.trainer.data_cache), str(root / 'mixed')],
                             cwd=h.REPO, env=cli.trainer.env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    h.pin_to_one_core(mixed.pid)
    mixed_out = mixed.communicate(timeout=900)[0]
    return cli, one.check(0), vec.check(0), (mixed.returncode, mixed_out)


@pytest.fixture(scope='module')
def sweeps(trainer):
    return trainer.result('study_sweeps')


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_table_best_row_and_heatmap(sweeps):
    cli, one, _, _ = sweeps
    rows = _csv(cli.root / 'one' / 'results.csv')
    assert [r['run'] for r in rows] == RUNS
    key = lambda r: (-float(r['val_accuracy']), float(r['val_loss']))
    best = min(rows, key=key)['run']
    assert f'Best by validation accuracy: {best} ' in one.output
    md = (cli.root / 'one' / 'results.md').read_text()
    assert next(line for line in md.splitlines() if '**best**' in line).split('|')[2].strip() == best
    for r in rows:   # the table is each run's own results.json
        res = s.read_json(cli.root / 'one' / r['run'] / 'results.json')
        assert float(r['val_accuracy']) == pytest.approx(res['val']['accuracy'])
    assert (cli.root / 'one' / 'heatmap.png').stat().st_size > 0
    assert 'Trained 4, skipped 0' in one.output


def test_rerun_skips_finished_runs_and_finishes_the_rest(sweeps):
    cli, _, _, _ = sweeps
    sweep = cli.root / 'one'
    mtimes = {r: (sweep / r / 'results.json').stat().st_mtime_ns for r in RUNS}
    steps = {r: h.finished_steps(sweep / r) for r in RUNS}
    # A sweep killed while writing its last run: that run's results.json is missing.
    (sweep / RUNS[-1] / 'results.json').unlink()
    rerun = cli.start('sweep', f'--workdir={sweep}', *GRID, log='rerun').check(0)
    assert 'Trained 1, skipped 3' in rerun.output
    for r in RUNS[:-1]:
        assert (sweep / r / 'results.json').stat().st_mtime_ns == mtimes[r]
    # The unfinished run resumed from its checkpoints: no new training step.
    assert (sweep / RUNS[-1] / 'results.json').exists()
    assert h.finished_steps(sweep / RUNS[-1]) == steps[RUNS[-1]]


def _train_losses(workdir):
    return np.array([r['loss'] for _, r in sorted(h.train_steps(workdir).items())])


def _assert_same_run(a, b):
    ra, rb = s.read_json(a / 'results.json'), s.read_json(b / 'results.json')
    assert ra['step'] == rb['step'] and ra['epochs_trained'] == rb['epochs_trained']
    assert ra['val']['accuracy'] == rb['val']['accuracy']
    np.testing.assert_allclose(ra['val']['loss'], rb['val']['loss'], rtol=1e-4, atol=1e-6)
    la, lb = _train_losses(a), _train_losses(b)
    assert len(la) == len(lb) == h.STEPS_PER_EPOCH * 2
    # The vmapped program rounds differently from the single one (1e-6 on the first steps);
    # training amplifies that to ~2e-4 after 8 steps at lr 0.08. A wrong learning rate,
    # batch or dropout mask moves the losses by percents.
    np.testing.assert_allclose(la[:h.STEPS_PER_EPOCH], lb[:h.STEPS_PER_EPOCH], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(la, lb, rtol=5e-4, atol=1e-6)
    va, vb = h.val_epochs(a), h.val_epochs(b)
    assert sorted(va) == sorted(vb) == [1, 2]
    for e in va:
        np.testing.assert_allclose(va[e]['loss'], vb[e]['loss'], rtol=1e-4, atol=1e-6)


def test_vectorized_sweep_matches_one_by_one(sweeps):
    cli, _, vec, _ = sweeps
    assert 'Vectorized: 4 models (optimizer.learning_rate, seed vary)' in vec.output
    for r in RUNS:
        _assert_same_run(cli.root / 'vec' / r, cli.root / 'one' / r)
        assert s.read_json(cli.root / 'vec' / r / 'results.json')['vectorized']['models'] == 4


def test_vectorized_dropout_weight_decay_label_smoothing_match_the_trainer(sweeps):
    cli, _, _, (rc, out) = sweeps
    assert rc == 0, out[-5000:]
    for i in range(2):
        _assert_same_run(cli.root / 'mixed' / f'vec{i}', cli.root / 'mixed' / f'one{i}')
    # The two configs really differ (else the comparison would prove little).
    assert not np.allclose(_train_losses(cli.root / 'mixed' / 'vec0'),
                           _train_losses(cli.root / 'mixed' / 'vec1'))
