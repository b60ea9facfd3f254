"""A run stopped (SIGSTOP: Ctrl-Z, a laptop's sleep, `docker pause`, a frozen VM) while a
checkpoint is written in the background, then continued. By default a one-process run
waits for its save however long it was stopped; with a deadline shorter than the stop
(`checkpoint.save_timeout_s`, as a multi-process run has), the save fails: the run says so
at its next sync point, keeps the previous checkpoint, saves again there and ends as an
uninterrupted run does (job_suspended below)."""

import json
import signal
import sys
import time
from pathlib import Path

import forked_cli
import pytest
import train_harness as h

SUSPEND_SCRIPT = """
import concurrent.futures, os, signal, sys, time
import orbax.checkpoint as ocp
from ghostnet_jax.training import checkpoints
calls = {'save': 0}
pool = concurrent.futures.ThreadPoolExecutor(1)
commit, save = ocp.JsonCheckpointHandler.async_save, checkpoints.Checkpointer.save

async def slow_commit(self, *a, **k):
    futures = await commit(self, *a, **k)
    if calls['save'] == 2:   # a slow disk: epoch 2's save is still being written when...
        futures = [*(futures or []), pool.submit(time.sleep, 0.5)]
    return futures

def suspended_save(self, *a, **k):
    calls['save'] += 1
    out = save(self, *a, **k)
    if calls['save'] == 2:   # ...the process is stopped (Ctrl-Z, a laptop's sleep)
        os.kill(os.getpid(), signal.SIGSTOP)
    return out

ocp.JsonCheckpointHandler.async_save = slow_commit
checkpoints.Checkpointer.save = suspended_save
from ghostnet_jax.cli.process import setup_logging
setup_logging()   # as `python -m ghostnet_jax.train` does
from ghostnet_jax import train
sys.exit(train.main(sys.argv[1:]))
"""


SUSPEND_S, SAVE_TIMEOUT_S = 8, 3


def _stopped(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] == 'T'
    except FileNotFoundError:  # ended
        return False


@h.job('suspended', after='base')
def job_suspended(t: h.Trainer, root: Path) -> dict:
    """The reference run, stopped (SIGSTOP) for SUSPEND_S seconds while epoch 2's checkpoint
    is written in the background, then continued (SIGCONT): with a save deadline shorter
    than the stop (the save fails) and with the default (no deadline: it is waited for)."""
    out = {}
    root.mkdir(parents=True, exist_ok=True)
    for name, flags in (
        ('deadline', (f'--config.checkpoint.save_timeout_s={SAVE_TIMEOUT_S}',)),
        ('default', (f'--config.max_steps={h.PARALLEL_STEPS}',)),
    ):
        workdir = root / name
        args = [
            sys.executable,
            '-c',
            SUSPEND_SCRIPT,
            f'--config={h.SMOKE}',
            f'--workdir={workdir}',
            *t.base_overrides(),
            *h.BASE_FLAGS,
            *flags,
        ]
        log = root / f'{name}.log'
        proc = forked_cli.start(args, t.env(), h.REPO, log, cpus=h.one_core())
        run = h.Run(proc, workdir, log, args)
        deadline = time.time() + 300
        while not _stopped(proc.pid):
            assert proc.poll() is None, f'ended before it was suspended\n{run.tail()}'
            assert time.time() < deadline, f'never suspended\n{run.tail()}'
            time.sleep(0.05)
        stopped_at = h.finished_steps(workdir)
        time.sleep(SUSPEND_S)
        proc.send_signal(signal.SIGCONT)
        out[name] = dict(run=run.wait(), stopped_at=stopped_at)
    return out


EPOCH, END = h.STEPS_PER_EPOCH, h.PARALLEL_STEPS

pytestmark = pytest.mark.skipif(
    not h.Path('/proc/self/stat').exists(), reason='reads process states from /proc'
)


def test_a_save_past_its_deadline_is_saved_again_and_the_run_ends_as_uninterrupted(
    trainer, base_run
):
    out = trainer.result('suspended')['deadline']
    run = out['run']
    assert run.rc == 0, run.tail()
    assert out['stopped_at'] == [EPOCH], out  # stopped while epoch 2's save was in flight
    output = run.output()
    failed = [
        line
        for line in output.splitlines()
        if f'checkpoint of step {END} could not be finished' in line
    ]
    assert len(failed) == 1 and 'TimeoutError' in failed[0], run.tail()
    assert f'step {EPOCH}, is kept' in failed[0] and 'Traceback' not in output
    steps = h.finished_steps(run.workdir)
    # Saved again at the next sync point (log_every_steps=2); no half-written save left.
    assert END not in steps and END + 2 in steps and h.TOTAL_STEPS in steps, steps
    assert not list((run.workdir / 'checkpoints').glob('*tmp*'))
    h.assert_trees_equal(
        h.state_arrays(run.workdir, h.TOTAL_STEPS),
        h.state_arrays(base_run, h.TOTAL_STEPS),
        'suspended vs reference',
    )
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
    assert SUSPEND_S > SAVE_TIMEOUT_S
    h.assert_trees_equal(
        h.state_arrays(run.workdir, END),
        h.state_arrays(base_run, END),
        'suspended (default) vs reference',
    )
