"""The fault matrix (README "Reliability"): each failure ends in a clear paragraph with its
own exit code, loses nothing already saved, and the same command then finishes the run.

train_jobs.job_faults injects each fault into a max_steps=8 run of the reference config
(FAULT_SCRIPT patches the checkpointer, evaluator or train step in that process only),
then reruns the same command; the result must be the reference run's state at step 8."""
import train_harness as h

EPOCH, END = h.STEPS_PER_EPOCH, h.PARALLEL_STEPS


def _check_rerun(trainer, base_run, fault, resumed_from):
    rerun = fault['rerun']
    assert rerun.rc == 0, rerun.tail()
    assert f'Resumed from step {resumed_from}' in rerun.output(), rerun.tail()
    h.assert_trees_equal(h.state_arrays(rerun.workdir, END), h.state_arrays(base_run, END),
                         'rerun after the fault vs reference')
    # The history too, the train loss of an epoch resumed half-way included.
    drop = lambda hist: [{k: v for k, v in r.items() if k != 'epoch_time_s'} for r in hist]
    assert drop(h.host_state(rerun.workdir, END)['history']) == \
        drop(h.host_state(base_run, END)['history'])


def test_disk_full_during_a_save(trainer, base_run):
    fault = trainer.result('faults')['disk_full']
    first = fault['first']
    assert first.returncode == 6, first.stderr[-3000:]
    assert 'No space left on device' in first.stderr and 'disk is full' in first.stderr
    assert 'Traceback' not in first.stderr
    assert fault['left'] == [EPOCH]            # the earlier checkpoint is intact
    _check_rerun(trainer, base_run, fault, EPOCH)


def test_sigterm_while_compiling_saving_or_evaluating(trainer, base_run):
    faults = trainer.result('faults')
    # SIGTERM before the first step: the first sync point (log_every_steps=2) saves.
    # During the first save (end of epoch 1): the next sync point saves again.
    # During epoch 2's validation: the decision after it saves the validated epoch.
    for name, saved in (('sigterm_in_compile', [2]), ('sigterm_in_save', [EPOCH, EPOCH + 2]),
                        ('sigterm_in_eval', [EPOCH, END])):
        fault = faults[name]
        first = fault['first']
        assert first.returncode == 0, (name, first.stderr[-3000:])
        assert 'preempted (SIGTERM)' in first.stderr, (name, first.stderr[-3000:])
        assert fault['left'] == saved, (name, fault['left'])
        _check_rerun(trainer, base_run, fault, saved[-1])


def test_workdir_that_cannot_be_created(trainer):
    run = trainer.result('faults')['unwritable']
    assert run.rc == 6, run.tail()
    assert 'choose another --workdir' in run.output() and 'Traceback' not in run.output()


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(trainer, base_run):
    run = trainer.result('faults')['damaged']
    assert run.rc == 0, run.tail()
    assert f'Checkpoint {run.workdir / "checkpoints" / str(END)} is damaged' in run.output(), \
        run.tail()
    assert f'Resumed from step {EPOCH}' in run.output(), run.tail()
    aside = [p.name for p in (run.workdir / 'checkpoints').iterdir() if '.damaged-' in p.name]
    assert len(aside) == 1 and aside[0].startswith(f'{END}.damaged-'), aside   # kept, not deleted
    step = 3 * EPOCH
    h.assert_trees_equal(h.state_arrays(run.workdir, step), h.state_arrays(base_run, step),
                         'resumed from the previous checkpoint vs reference')


def test_corrupt_image_is_named_or_skipped_by_choice(trainer):
    faults = trainer.result('faults')
    run = faults['corrupt']
    assert run.rc == 4, run.tail()
    last = [line for line in run.output().splitlines() if line.strip()][-1]
    assert '05.png' in last and 'skip_corrupt_images' in last, run.tail()
    assert 'Traceback' not in run.output()
    skipped = faults['corrupt_skipped']
    assert skipped.rc == 0, skipped.tail()
    assert '05.png' in skipped.output(), skipped.tail()   # logged by name
