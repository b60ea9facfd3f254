"""A run written before the trainer stopped rewriting its config (tests/fixtures/legacy_run,
made by the code of commit 26b76e5): a finished time-budgeted run with eval_flip, whose
config.json holds the fitted num_epochs and the "third fit's" decay_respaced_from. It must
still evaluate (that code failed with a ValueError on it), predict what its results.json
reports, and resume from its epoch-2 checkpoint to the very weights the old trainer wrote."""
import json
import shutil

import numpy as np
import pytest

import train_harness as h

FIXTURE = h.REPO / 'tests' / 'fixtures' / 'legacy_run' / 'budgeted'
# The command the fixture was trained with (its README), as a user would rerun it.
COMMAND = ('--config.data.source=folder:data', '--config.model.conv_impl=native',
           '--config.report=False', '--config.time_budget_minutes=1', '--config.eval_flip=True',
           '--config.data.low_res.size=8', '--config.data.low_res.epochs_fraction=0.000001',
           '--config.optimizer.warmup_epochs=1', '--config.num_epochs=6',
           '--config.checkpoint.max_to_keep=100', '--config.checkpoint.best_metric=val_loss',
           '--config.checkpoint.best_mode=min')


@pytest.fixture(scope='module')
def legacy(tmp_path_factory):
    root = tmp_path_factory.mktemp('legacy')
    shutil.copytree(FIXTURE, root / 'budgeted')
    h.make_dataset(root / 'data')        # the fixture's data source is the relative folder:data
    return root


@pytest.fixture(scope='module')
def results():
    return json.loads((FIXTURE / 'results.json').read_text())


def test_evaluate_reproduces_the_legacy_results(legacy, results, monkeypatch, capsys):
    from ghostnet_jax import evaluate
    monkeypatch.chdir(legacy)
    assert json.loads((legacy / 'budgeted' / 'config.json').read_text())['optimizer'][
        'decay_respaced_from'] == [8, 11]
    code = evaluate.main(['--workdir', 'budgeted', '--split', 'val'])
    assert code == 0, capsys.readouterr().err[-3000:]
    got = json.loads((legacy / 'budgeted' / 'eval-val-best.json').read_text())
    assert got['step'] == results['step'] and got['eval_flip'] is True
    assert got['num_examples'] == results['val']['num_examples']
    assert got['accuracy'] == results['val']['accuracy']
    assert abs(got['loss'] - results['val']['loss']) < 1e-6


def test_predict_averages_the_mirrored_images_as_the_run_evaluated(legacy, results):
    import dataclasses
    import ghostnet_jax
    from ghostnet_jax.data import load_split
    model = ghostnet_jax.load(legacy / 'budgeted')
    assert model.spec.eval_flip          # from config.json: the old spec did not record it
    val = load_split(f'folder:{legacy / "data"}', 'train[80%:]')
    probs = model.predict(val.images)
    labels = val.labels
    loss = float(np.mean(-np.log(probs[np.arange(len(labels)), labels])))
    assert float(np.mean(probs.argmax(-1) == labels)) == results['val']['accuracy']
    assert loss == pytest.approx(results['val']['loss'], abs=1e-5)
    # Without the flip the numbers are another model's: the check above can fail.
    plain = ghostnet_jax.TrainedModel(dataclasses.replace(model.spec, eval_flip=False),
                                      model.preprocessing, model.model, model.variables,
                                      model.source)
    p = plain.predict(val.images)
    assert abs(float(np.mean(-np.log(p[np.arange(len(labels)), labels]))) - loss) > 1e-4


def test_a_legacy_checkpoint_resumes_to_the_old_trainers_weights(legacy, trainer):
    run = legacy / 'resumed'
    shutil.copytree(FIXTURE / 'checkpoints' / '8', run / 'checkpoints' / '8')
    out = trainer.cli(['-m', 'ghostnet_jax.train', f'--config={h.SMOKE}', f'--workdir={run}',
                       *COMMAND], cwd=legacy, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert 'Resumed from step 8' in out.stderr and 'Resuming with a changed' not in out.stderr
    assert 'refit' not in out.stderr                 # the stored plan is kept
    # The schedule is host arithmetic: the resumed steps' learning rates (the respaced
    # decay's) must be the old run's exactly.
    assert _learning_rates(run, after=8) == pytest.approx(
        _learning_rates(legacy / 'budgeted', after=8), rel=1e-6, abs=1e-9)
    # The weights went through 16 XLA:CPU steps, whose float rounding depends on the CPU's
    # vector units: the old trainer, resumed from the same checkpoint on the same machine,
    # ends bit-identical to this one (checked by hand on an AVX-512 machine), but the
    # fixture was written on another CPU, where they differ by up to ~1e-6.
    h.assert_trees_close(h.state_arrays(run, 24), h.state_arrays(legacy / 'budgeted', 24),
                         'legacy checkpoint resumed vs the old trainer straight through',
                         rtol=1e-4, atol=1e-5)
    ours = json.loads((run / 'results.json').read_text())
    assert ours['num_epochs'] == 6 and ours['time_budget']['respaced_at_step'] == 8


def _learning_rates(workdir, after: int) -> list[float]:
    """The per-step learning rates a run logged after step `after`, in step order."""
    rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
    steps = {r['step']: r['learning_rate'] for r in rows
             if r.get('split') == 'train' and 'learning_rate' in r and r['step'] > after}
    assert steps, f'no per-step learning rates in {workdir}/metrics.jsonl'
    return [steps[k] for k in sorted(steps)]
