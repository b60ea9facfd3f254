"""results.json evaluates the weights that one documented rule picks (training/evaluation.py):
early stopping's restore_best honours its monitor; restore_best=False keeps the last
weights; results.json says which checkpoint and why. A run stopped by max_steps trains on
when rerun without it, exactly as if it had never stopped."""

import json
from pathlib import Path

import numpy as np
import train_harness as h


@h.job('final_weights', after='base')
def job_final_weights(t: h.Trainer, root: Path) -> dict:
    """Which weights results.json evaluates: early stopping on val_loss that never fires,
    with restore_best on and off; then the max_steps run continued to the full length."""
    common = (
        '--config.callbacks.early_stopping.enabled=True',
        '--config.callbacks.early_stopping.monitor=val_loss',
        '--config.callbacks.early_stopping.mode=min',
        '--config.callbacks.early_stopping.patience=100',
    )
    runs = {
        name: t.start(
            root / name,
            *common,
            f'--config.max_steps={steps}',
            f'--config.callbacks.early_stopping.restore_best={flag}',
        )
        for name, steps, flag in (
            ('restore_best', 3 * h.STEPS_PER_EPOCH, True),
            ('last', h.PARALLEL_STEPS, False),
        )
    }
    results = {}
    for name, run in runs.items():
        run.wait()
        path = run.workdir / 'results.json'
        results[name] = json.loads(path.read_text()) if path.exists() else None
    # The max_steps run continued without max_steps: it must train on to the full length.
    runs['continued'] = t.run(
        root / 'last',
        *common,
        '--config.callbacks.early_stopping.restore_best=False',
        log_name='continued',
    )
    return dict(runs=runs, results=results)


def test_restore_best_follows_the_early_stopping_monitor(trainer, base_run):
    out = trainer.result('final_weights')
    run, results = out['runs']['restore_best'], out['results']['restore_best']
    assert run.rc == 0, run.tail()
    history = h.host_state(run.workdir, h.finished_steps(run.workdir)[-1])['history']
    losses = [r['val_loss'] for r in history]
    best = int(np.argmin(losses))  # the first minimum: keras' rule with min_delta 0
    assert results['checkpoint'] == 'best'
    assert results['step'] == history[best]['step'] and results['epoch'] == best + 1
    assert 'early_stopping.restore_best' in results['checkpoint_rule']
    assert results['checkpoint_metric'] == {'val_loss': losses[best]}
    # The evaluated weights are that epoch's: the same validation numbers.
    assert results['val']['accuracy'] == history[best]['val_accuracy']
    assert abs(results['val']['loss'] - losses[best]) < 1e-6


def test_restore_best_false_evaluates_the_last_weights(trainer):
    out = trainer.result('final_weights')
    run, results = out['runs']['last'], out['results']['last']
    assert run.rc == 0, run.tail()
    assert results['checkpoint'] == 'last' and results['step'] == h.PARALLEL_STEPS
    assert 'restore_best=False' in results['checkpoint_rule']
    assert results['stop_reason'] == f'max_steps={h.PARALLEL_STEPS} reached'


def test_a_max_steps_run_continues_exactly_when_max_steps_is_lifted(trainer, base_run):
    run = trainer.result('final_weights')['runs']['continued']
    assert run.rc == 0, run.tail()
    assert f'Resumed from step {h.PARALLEL_STEPS}' in run.output(), run.tail()
    assert 'not bit for bit' not in run.output()  # the same XLA:CPU thread count
    assert json.loads((run.workdir / 'results.json').read_text())['stop_reason'] == 'completed'
    # Early stopping that never fires changes nothing: the reference run's final state.
    h.assert_trees_equal(
        h.state_arrays(run.workdir, h.TOTAL_STEPS),
        h.state_arrays(base_run, h.TOTAL_STEPS),
        'continued vs reference',
    )
