"""EarlyStopping and ReduceLROnPlateau inside the real training loop."""

import json
from pathlib import Path

import numpy as np
import train_harness as h


@h.job('early_stopping', after='base')
def job_early_stopping(t: h.Trainer, root: Path) -> h.Run:
    """val_accuracy can never improve by more than min_delta=1.0 and val_loss never by 100:
    early stopping must fire after ES_PATIENCE + 1 epochs, the plateau halve the lr after
    PLATEAU_PATIENCE + 1."""
    return t.run(
        root / 'run',
        '--config.callbacks.early_stopping.enabled=True',
        '--config.callbacks.early_stopping.monitor=val_accuracy',
        '--config.callbacks.early_stopping.min_delta=1.0',
        f'--config.callbacks.early_stopping.patience={h.ES_PATIENCE}',
        '--config.callbacks.reduce_lr_on_plateau.enabled=True',
        '--config.callbacks.reduce_lr_on_plateau.monitor=val_loss',
        '--config.callbacks.reduce_lr_on_plateau.min_delta=100.0',
        f'--config.callbacks.reduce_lr_on_plateau.patience={h.PLATEAU_PATIENCE}',
        '--config.callbacks.reduce_lr_on_plateau.factor=0.5',
    )


def _keras_stop_epoch(values, patience, mode, min_delta=0.0):
    """Hand-rolled Keras EarlyStopping: the 1-based epoch it stops after, or None."""
    best, wait = None, 0
    for epoch, v in enumerate(values, 1):
        wait += 1
        better = best is None or (v - min_delta > best if mode == 'max' else v + min_delta < best)
        if better:
            best, wait = v, 0
        elif wait >= patience and epoch > 1:
            return epoch
    return None


def test_early_stopping_does_not_fire_while_the_monitored_loss_improves(base_run):
    # conftest.base_run: early stopping on train_loss, mode min, patience 2.
    results = json.loads((base_run / 'results.json').read_text())
    host = h.host_state(base_run, h.TOTAL_STEPS)
    losses = [r['train_loss'] for r in host['history']]
    assert len(losses) == h.EPOCHS
    assert _keras_stop_epoch(losses, patience=2, mode='min') is None, losses
    assert results['stop_reason'] == 'completed'
    assert results['epochs_trained'] == h.EPOCHS
    es = host['early_stopping']
    assert es['stopped_epoch'] is None and es['monitor'] == 'train_loss'
    assert es['best'] == min(losses) and es['best_epoch'] == int(np.argmin(losses))


def test_early_stopping_fires_after_patience_and_plateau_lowers_the_lr(trainer, base_run):
    # job_early_stopping above: val_accuracy can never improve by min_delta=1.0, so
    # only epoch 1 counts as an improvement: with patience p the run stops after epoch p + 1
    # (not before). val_loss never improves by 100: the plateau halves the lr scale after
    # epoch PLATEAU_PATIENCE + 1.
    run = trainer.result('early_stopping')
    assert run.rc == 0, run.tail()
    patience, plateau_patience = h.ES_PATIENCE, h.PLATEAU_PATIENCE
    stop_epoch = patience + 1
    results = json.loads((run.workdir / 'results.json').read_text())
    assert results['stop_reason'] == f'early stopping at epoch {stop_epoch}'
    assert results['epochs_trained'] == stop_epoch
    last = h.finished_steps(run.workdir)[-1]
    assert last == stop_epoch * h.STEPS_PER_EPOCH
    host = h.host_state(run.workdir, last)
    assert [r['epoch'] for r in host['history']] == list(range(1, stop_epoch + 1))
    assert host['early_stopping']['stopped_epoch'] == stop_epoch - 1  # 0-based, as Keras
    assert host['early_stopping']['best_epoch'] == 0
    assert sorted(h.val_epochs(run.workdir)) == list(range(1, stop_epoch + 1))
    # restore_best (default on): results.json evaluates early stopping's best epoch (the
    # first: nothing improves by min_delta=1.0 after it), not the best by another rule.
    assert results['checkpoint'] == 'best' and results['step'] == h.STEPS_PER_EPOCH
    assert 'early_stopping.restore_best' in results['checkpoint_rule']
    assert results['val']['accuracy'] == host['history'][0]['val_accuracy']
    assert max(h.train_steps(run.workdir)) == last

    # Plateau: reduced at the end of epoch plateau_patience + 1; lr_scale in the history is
    # the scale each epoch trained with.
    reduced_after = plateau_patience + 1
    expected_scale = [1.0 if e <= reduced_after else 0.5 for e in range(1, stop_epoch + 1)]
    assert [r['lr_scale'] for r in host['history']] == expected_scale
    assert host['plateau']['scale'] == 0.5
    # train/learning_rate is the schedule (same as the reference run's) times the scale.
    got, ref = h.train_steps(run.workdir), h.train_steps(base_run)
    for step in range(1, last + 1):
        scale = expected_scale[(step - 1) // h.STEPS_PER_EPOCH]
        assert got[step]['learning_rate'] == ref[step]['learning_rate'] * scale, step
    # Until the reduction the run is the reference run.
    for step in range(1, reduced_after * h.STEPS_PER_EPOCH + 1):
        assert got[step]['loss'] == ref[step]['loss'], step
    assert got[last]['loss'] != ref[last]['loss']
