"""`python -m ghostnet_jax.sweep`: the table, the best row, resuming, and --vectorize giving
the same per-run results as the same runs trained one by one."""

import csv

import numpy as np
import pytest
import study_harness as s
import train_harness as h

GRID = ('--grid=optimizer.learning_rate=0.02,0.08', '--grid=seed=0,1')
RUNS = [
    'learning_rate=0.02,seed=0',
    'learning_rate=0.02,seed=1',
    'learning_rate=0.08,seed=0',
    'learning_rate=0.08,seed=1',
]

# The vectorized sweep: two runs that differ in every field --vectorize can vary, as one
# vmap-ed program. Run `a` is the grid's first run (trained one by one in `one`), run `b`
# is trained one by one too (`vec_ref`), so each vectorized run has the trainer's own run
# to match.
VARIANTS = (
    '--variant=a:optimizer.learning_rate=0.02,seed=0',
    '--variant=b:optimizer.learning_rate=0.08,seed=1,model.dropout_rate=0.3,'
    'optimizer.weight_decay=0.001,label_smoothing=0.1',
)
VARIED = (
    'label_smoothing, model.dropout_rate, optimizer.learning_rate, optimizer.weight_decay, seed'
)


@h.job('study_sweeps')
def _sweeps(t, root):
    cli = s.Cli(root)
    one = cli.start('sweep', f'--workdir={root / "one"}', *GRID, log='one')
    vec = cli.start('sweep', f'--workdir={root / "vec"}', *VARIANTS, '--vectorize', log='vec')
    ref = cli.start('sweep', f'--workdir={root / "vec_ref"}', VARIANTS[1], log='vec_ref')
    return cli, one.check(0), vec.check(0), ref.check(0)


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
    assert (
        next(line for line in md.splitlines() if '**best**' in line).split('|')[2].strip() == best
    )
    for r in rows:  # the table is each run's own results.json
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
    np.testing.assert_allclose(
        la[: h.STEPS_PER_EPOCH], lb[: h.STEPS_PER_EPOCH], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(la, lb, rtol=5e-4, atol=1e-6)
    va, vb = h.val_epochs(a), h.val_epochs(b)
    assert sorted(va) == sorted(vb) == [1, 2]
    for e in va:
        np.testing.assert_allclose(va[e]['loss'], vb[e]['loss'], rtol=1e-4, atol=1e-6)


def test_vectorized_sweep_matches_the_trainer_run_by_run(sweeps):
    cli, _, vec, _ = sweeps
    assert f'Vectorized: 2 models ({VARIED} vary)' in vec.output
    for ours, reference in (('a', cli.root / 'one' / RUNS[0]), ('b', cli.root / 'vec_ref' / 'b')):
        _assert_same_run(cli.root / 'vec' / ours, reference)
        assert s.read_json(cli.root / 'vec' / ours / 'results.json')['vectorized']['models'] == 2
    # The two runs really differ (else the comparison would prove little).
    assert not np.allclose(
        _train_losses(cli.root / 'vec' / 'a'), _train_losses(cli.root / 'vec' / 'b')
    )
