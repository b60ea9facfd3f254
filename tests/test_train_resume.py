"""Interrupted runs resume exactly: SIGKILL after a checkpoint, SIGTERM (preemption).

The runs (job_sigkill below / job_sigterm) use the reference run's config; the
signal is sent as soon as the first checkpoint is finished, so the run is mid-training."""

import json
import signal
from pathlib import Path

import train_harness as h


def _interrupted(
    t: h.Trainer, root: Path, sig: int, *rerun_flags: str
) -> tuple[h.Run, dict, h.Run]:
    """A reference-config run that gets `sig` once its first checkpoint is finished, what it
    left behind, and the rerun in the same workdir (with `rerun_flags` added)."""
    run = t.start(root / 'run', *h.BASE_FLAGS)
    h.wait_for_checkpoint(run, h.STEPS_PER_EPOCH)
    run.signal(sig)
    run.wait()
    steps = h.finished_steps(run.workdir)
    left = dict(
        rc=run.rc,
        steps=steps,
        host=h.host_state(run.workdir, steps[-1]),
        tmp=sorted(p.name for p in (run.workdir / 'checkpoints').glob('*tmp*')),
        results=(run.workdir / 'results.json').exists(),
        trained=max(h.train_steps(run.workdir)),
        validated=sorted(h.val_epochs(run.workdir)),
    )
    return run, left, t.run(run.workdir, *h.BASE_FLAGS, *rerun_flags, log_name='rerun')


@h.job('sigkill', after='base')
def job_sigkill(t: h.Trainer, root: Path):
    # A harmless change on resume (logging cadence, retention) is accepted silently.
    return _interrupted(
        t, root, signal.SIGKILL, '--config.log_every_steps=3', '--config.checkpoint.max_to_keep=99'
    )


@h.job('sigterm', after='base')
def job_sigterm(t: h.Trainer, root: Path):
    return _interrupted(t, root, signal.SIGTERM)


def _assert_resumed_like_base(workdir, base_run, resumed_from: int):
    """Final train state bit-identical to the uninterrupted run, and so are the metrics of
    every step and epoch trained after the checkpoint the run resumed from."""
    assert h.finished_steps(workdir)[-1] == h.TOTAL_STEPS
    h.assert_trees_equal(
        h.state_arrays(workdir, h.TOTAL_STEPS),
        h.state_arrays(base_run, h.TOTAL_STEPS),
        f'resumed (from step {resumed_from}) vs uninterrupted final state',
    )
    got, ref = h.train_steps(workdir), h.train_steps(base_run)
    assert sorted(got) == list(range(1, h.TOTAL_STEPS + 1)), 'metrics.jsonl has gaps'
    later = range(resumed_from + 1, h.TOTAL_STEPS + 1)
    assert [got[s] for s in later] == [ref[s] for s in later]
    got_val, ref_val = h.val_epochs(workdir), h.val_epochs(base_run)
    first_full_epoch = -(-resumed_from // h.STEPS_PER_EPOCH) + 1
    for epoch in range(first_full_epoch, h.EPOCHS + 1):
        assert got_val[epoch] == ref_val[epoch], epoch
    # The per-epoch history, train loss of a resumed partial epoch included, is the
    # uninterrupted run's (the running sums of the epoch were saved with the checkpoint).
    drop = lambda hist: [{k: v for k, v in r.items() if k != 'epoch_time_s'} for r in hist]
    assert drop(h.host_state(workdir, h.TOTAL_STEPS)['history']) == drop(
        h.host_state(base_run, h.TOTAL_STEPS)['history']
    )
    results = json.loads((workdir / 'results.json').read_text())
    ref_results = json.loads((base_run / 'results.json').read_text())
    assert results['stop_reason'] == 'completed'
    assert results['val'] == ref_results['val']


def test_sigkill_after_a_checkpoint_then_rerun_is_bit_identical(trainer, base_run):
    run, left, rerun = trainer.result('sigkill')
    assert left['rc'] == -signal.SIGKILL, run.tail()
    killed_at = left['steps'][-1]
    assert h.STEPS_PER_EPOCH <= killed_at < h.TOTAL_STEPS, 'the run was not interrupted'
    assert not left['results']
    assert rerun.rc == 0, rerun.tail()
    assert f'Resumed from step {killed_at}' in rerun.output(), rerun.tail()
    _assert_resumed_like_base(run.workdir, base_run, killed_at)


def test_sigterm_saves_a_checkpoint_exits_zero_and_rerun_completes(trainer, base_run):
    run, left, rerun = trainer.result('sigterm')
    assert left['rc'] == 0, run.tail()
    assert 'preempted (SIGTERM) at step' in run.output(), run.tail()
    saved = left['steps']
    assert h.STEPS_PER_EPOCH <= saved[-1] < h.TOTAL_STEPS, saved
    assert not left['tmp'], 'a save was left unfinished'
    # The preemption checkpoint is the step the run had reached, not just the last epoch's.
    assert saved[-1] == left['trained']
    assert not left['results']
    host = left['host']
    assert host['evaluated_epochs'] == len(host['history']) == len(left['validated'])
    assert left['validated'] == list(range(1, len(left['validated']) + 1))

    assert rerun.rc == 0, rerun.tail()
    assert f'Resumed from step {saved[-1]}' in rerun.output(), rerun.tail()
    _assert_resumed_like_base(run.workdir, base_run, saved[-1])
