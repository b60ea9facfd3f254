"""`python -m ghostnet_jax.evaluate` against the reference run's own end-of-training numbers."""

import json

import train_harness as h


def _evaluate(trainer, *args):
    return trainer.cli(['-m', 'ghostnet_jax.evaluate', *args])


def test_evaluate_reproduces_results_and_selects_checkpoints(trainer, base_run):
    results = json.loads((base_run / 'results.json').read_text())
    out = _evaluate(trainer, '--workdir', str(base_run), '--checkpoint', 'best', '--split', 'val')
    assert out.returncode == 0, out.stderr[-3000:]
    best = json.loads((base_run / 'eval-val-best.json').read_text())
    # The trainer evaluated the best checkpoint on validation at the end: same numbers.
    assert best['step'] == results['step'] and best['eval_flip'] is True  # BASE_FLAGS
    assert best['num_examples'] == results['val']['num_examples'] > 0
    assert best['accuracy'] == results['val']['accuracy']
    assert abs(best['loss'] - results['val']['loss']) < 1e-6
    assert set(best['per_class_accuracy']) == set(results['class_names'])

    # A step number picks that checkpoint: its accuracy is the one logged for its epoch
    # (in-process: the command line itself was run above).
    from ghostnet_jax import evaluate

    step = h.finished_steps(base_run)[0]
    assert (
        evaluate.main(['--workdir', str(base_run), '--checkpoint', str(step), '--split', 'val'])
        == 0
    )
    logged = h.val_epochs(base_run)[step // h.STEPS_PER_EPOCH]
    assert (
        json.loads((base_run / f'eval-val-{step}.json').read_text())['accuracy']
        == logged['accuracy']
    )


def test_evaluate_errors_name_what_exists(base_run, tmp_path, capsys):
    # In-process: both errors come before any compilation, and a subprocess would spend
    # ~15 s of the suite starting Python and JAX for each (the CLI itself is run above).
    from ghostnet_jax import evaluate

    code = evaluate.main(['--workdir', str(base_run), '--checkpoint', '99999', '--split', 'val'])
    err = capsys.readouterr().err
    assert code == 5 and 'available steps' in err, err[-2000:]
    assert 'Traceback' not in err
    code = evaluate.main(['--workdir', str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 5 and 'config.json' in err, err[-2000:]  # not a run: like predict's
    assert not list(tmp_path.iterdir())  # nothing written into a folder that is not a run


def test_evaluate_needs_only_the_workdir(trainer, base_run, tmp_path, monkeypatch):
    """A copy of the run whose training folder is gone: the checkpoint's own spec gives
    the model, classes and normalization; --source points at images elsewhere."""
    import shutil

    run = tmp_path / 'run'
    shutil.copytree(base_run, run)
    config = json.loads((run / 'config.json').read_text())
    config['data']['source'] = f'folder:{tmp_path / "gone"}'
    (run / 'config.json').write_text(json.dumps(config))
    data = h.make_dataset(tmp_path / 'elsewhere')  # the same images, another folder
    monkeypatch.setenv('GHOSTNET_JAX_CACHE', str(tmp_path / 'cache'))
    from ghostnet_jax import evaluate

    assert (
        evaluate.main(
            ['--workdir', str(run), '--source', f'folder:{data}', '--split', 'train[80%:]']
        )
        == 0
    )
    results = json.loads((base_run / 'results.json').read_text())
    [written] = run.glob('eval-folder*.json')
    got = json.loads(written.read_text())
    assert got['num_examples'] == results['val']['num_examples']
    assert got['accuracy'] == results['val']['accuracy']
    assert abs(got['loss'] - results['val']['loss']) < 1e-5
