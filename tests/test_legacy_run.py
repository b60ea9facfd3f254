"""A run written by an earlier version (tests/fixtures/legacy_run, made by the code of
commit 26b76e5 before the first release): a finished time-budgeted run with eval_flip,
whose time budget bent its decay mid-run, which this version no longer does. It still
evaluates and predicts, each computing what the other does on the same weights (numbers
computed here, in this process's jax, not the ones recorded under the old one); a resume
is refused in one paragraph (exit 2) before anything is written."""

import json
import shutil

import numpy as np
import pytest
import train_harness as h

FIXTURE = h.REPO / 'tests' / 'fixtures' / 'legacy_run' / 'budgeted'
# The command the fixture was trained with (its README), as a user would rerun it.
COMMAND = (
    '--config.data.source=folder:data',
    '--config.model.conv_impl=native',
    '--config.report=False',
    '--config.time_budget_minutes=1',
    '--config.eval_flip=True',
    '--config.data.low_res.size=8',
    '--config.data.low_res.epochs_fraction=0.000001',
    '--config.optimizer.warmup_epochs=1',
    '--config.num_epochs=6',
    '--config.checkpoint.max_to_keep=100',
    '--config.checkpoint.best_metric=val_loss',
    '--config.checkpoint.best_mode=min',
)


@pytest.fixture(scope='module')
def legacy(tmp_path_factory):
    root = tmp_path_factory.mktemp('legacy')
    shutil.copytree(FIXTURE, root / 'budgeted')
    h.make_dataset(root / 'data')  # the fixture's data source is the relative folder:data
    return root


@pytest.fixture(scope='module')
def results():
    return json.loads((FIXTURE / 'results.json').read_text())


@pytest.fixture(scope='module')
def evaluated(legacy, results):
    """`python -m ghostnet_jax.evaluate` of the run's best checkpoint on validation."""
    import os

    from ghostnet_jax import evaluate

    here = os.getcwd()
    os.chdir(legacy)
    try:
        assert evaluate.main(['--workdir', 'budgeted', '--split', 'val']) == 0
    finally:
        os.chdir(here)
    return json.loads((legacy / 'budgeted' / 'eval-val-best.json').read_text())


def test_evaluate_restores_the_checkpoint_results_json_names(evaluated, results):
    assert evaluated['step'] == results['step'] and evaluated['eval_flip'] is True
    assert evaluated['num_examples'] == results['val']['num_examples']


def test_predict_computes_what_evaluate_does_with_the_mirrored_images(legacy, evaluated):
    import dataclasses

    import ghostnet_jax
    from ghostnet_jax.data import load_split

    model = ghostnet_jax.load(legacy / 'budgeted')
    assert model.spec.eval_flip  # from config.json: the old spec did not record it
    val = load_split(f'folder:{legacy / "data"}', 'train[80%:]')
    probs = model.predict(val.images)
    labels = val.labels
    loss = float(np.mean(-np.log(probs[np.arange(len(labels)), labels])))
    assert float(np.mean(probs.argmax(-1) == labels)) == evaluated['accuracy']
    assert loss == pytest.approx(evaluated['loss'], abs=1e-5)
    # Without the flip the numbers are another model's: the check above can fail.
    plain = ghostnet_jax.TrainedModel(
        dataclasses.replace(model.spec, eval_flip=False),
        model.preprocessing,
        model.model,
        model.variables,
        model.source,
    )
    p = plain.predict(val.images)
    assert abs(float(np.mean(-np.log(p[np.arange(len(labels)), labels]))) - loss) > 1e-4


def test_a_resume_is_refused_in_one_paragraph_before_anything_is_written(legacy, trainer):
    run = legacy / 'resumed'
    shutil.copytree(FIXTURE / 'checkpoints' / '8', run / 'checkpoints' / '8')
    before = sorted(str(p.relative_to(run)) for p in run.rglob('*'))
    out = trainer.cli(
        ['-m', 'ghostnet_jax.train', f'--config={h.SMOKE}', f'--workdir={run}', *COMMAND],
        cwd=legacy,
        timeout=600,
    )
    assert out.returncode == 2, out.stderr[-4000:]
    error = [line for line in out.stderr.splitlines() if 'error:' in line]
    assert len(error) == 1 and 'Traceback' not in out.stderr, out.stderr[-4000:]
    assert 'written by an earlier version' in error[0] and 'still evaluates' in error[0]
    assert 'respaced' in error[0]  # names what this version no longer has
    assert sorted(str(p.relative_to(run)) for p in run.rglob('*')) == before
