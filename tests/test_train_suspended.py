"""A run stopped (SIGSTOP: Ctrl-Z, a laptop's sleep, `docker pause`, a frozen VM) while a
checkpoint is written in the background, then continued. By default a one-process run
waits for its save however long it was stopped; with a deadline shorter than the stop
(`checkpoint.save_timeout_s`, as a multi-process run has), the save fails: the run says so
at its next sync point, keeps the previous checkpoint, saves again there and ends as an
uninterrupted run does (train_jobs.job_suspended)."""
import json

import pytest

import train_harness as h
import train_jobs

EPOCH, END = h.STEPS_PER_EPOCH, h.PARALLEL_STEPS

pytestmark = pytest.mark.skipif(not h.Path('/proc/self/stat').exists(),
                                reason='reads process states from /proc')


def test_a_save_past_its_deadline_is_saved_again_and_the_run_ends_as_uninterrupted(trainer, base_run):
    out = trainer.result('suspended')['deadline']
    run = out['run']
    assert run.rc == 0, run.tail()
    assert out['stopped_at'] == [EPOCH], out   # stopped while epoch 2's save was in flight
    output = run.output()
    failed = [line for line in output.splitlines()
              if f'checkpoint of step {END} could not be finished' in line]
    assert len(failed) == 1 and 'TimeoutError' in failed[0], run.tail()
    assert f'step {EPOCH}, is kept' in failed[0] and 'Traceback' not in output
    steps = h.finished_steps(run.workdir)
    # Saved again at the next sync point (log_every_steps=2); no half-written save left.
    assert END not in steps and END + 2 in steps and h.TOTAL_STEPS in steps, steps
    assert not list((run.workdir / 'checkpoints').glob('*tmp*'))
    h.assert_trees_equal(h.state_arrays(run.workdir, h.TOTAL_STEPS),
                         h.state_arrays(base_run, h.TOTAL_STEPS), 'suspended vs reference')
    results = json.loads((run.workdir / 'results.json').read_text())
    reference = json.loads((base_run / 'results.json').read_text())
    assert (results['step'], results['val']) == (reference['step'], reference['val'])


def test_by_default_a_suspended_save_is_waited_for(trainer, base_run):
    out = trainer.result('suspended')['default']
    run = out['run']
    assert run.rc == 0, run.tail()
    assert out['stopped_at'] == [EPOCH], out
    assert 'could not be finished' not in run.output(), run.tail()
    assert h.finished_steps(run.workdir)[-1] == END
    assert train_jobs.SUSPEND_S > train_jobs.SAVE_TIMEOUT_S
    h.assert_trees_equal(h.state_arrays(run.workdir, END), h.state_arrays(base_run, END),
                         'suspended (default) vs reference')
