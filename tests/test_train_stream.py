"""The streamed pipeline in real training runs (job_stream below).

The reference is the device-resident run (conftest.base_run). test_data_stream shows that
an uninterrupted streamed run gets the same batches bit for bit; so a streamed run
SIGKILLed inside an epoch and rerun must continue identical to the reference, bit for bit, and
two streaming processes (each reading its half of every batch) must train like one to the
tolerance of test_train_distributed (2 devices reduce in another order)."""

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import train_harness as h

from ghostnet_jax.training.checkpoints import load_variables

STREAM_FLAGS = ('--config.data.pipeline=stream', '--config.data.stream.workers=0')


@h.job('stream', after='base')
def job_stream(t: h.Trainer, root: Path) -> dict:
    """The reference run streamed, checkpointing every 2 steps, SIGKILLed once a checkpoint
    inside epoch 2 (step 6) is finished, then rerun to the end of epoch 2; and two
    streaming processes."""
    flags = (*h.BASE_FLAGS, *STREAM_FLAGS, '--config.checkpoint.every_steps=2')
    run = t.start(root / 'run', *flags)
    h.wait_for_checkpoint(run, h.STEPS_PER_EPOCH + 2)
    run.signal(signal.SIGKILL)
    run.wait()
    # A kill that came a little later would have left more: resume from step 6 whatever
    # the loop reached (what a kill right after that save leaves).
    later = [s for s in h.finished_steps(run.workdir) if s > h.STEPS_PER_EPOCH + 2]
    for step in later:
        shutil.rmtree(run.workdir / 'checkpoints' / str(step))
    rerun = t.run(run.workdir, *flags, f'--config.max_steps={h.PARALLEL_STEPS}', log_name='rerun')
    procs = [
        p.wait()
        for p in h.distributed_runs(
            t, root / 'two', *STREAM_FLAGS, f'--config.max_steps={h.PARALLEL_STEPS}'
        )
    ]
    return dict(killed=run, removed=later, rerun=rerun, procs=procs)


KILLED_AT = h.STEPS_PER_EPOCH + 2  # inside epoch 2


def test_streamed_run_killed_inside_an_epoch_continues_as_the_device_run(trainer, base_run):
    job = trainer.result('stream')
    killed, rerun = job['killed'], job['rerun']
    assert killed.rc == -9 and rerun.rc == 0, rerun.tail()
    assert 'Input pipeline: stream' in rerun.output()
    # The data item of the checkpoint it resumed from: Grain's state after the 2nd batch.
    state = json.loads(
        (
            killed.workdir / 'checkpoints' / str(KILLED_AT) / 'data' / 'process_0-of-1.json'
        ).read_text()
    )
    assert (state['epoch'], state['step'], state['grain']) == (1, 2, {'next_index': 2}), state
    assert (
        f'Resumed from step {KILLED_AT}' in rerun.output()
        and 'Streamed epoch 2 resumes at step 2 from its saved Grain iterator state'
        in rerun.output()
    ), rerun.tail()
    final = h.PARALLEL_STEPS  # the end of epoch 2: the resumed epoch and its validation
    h.assert_trees_equal(
        h.state_arrays(rerun.workdir, final),
        h.state_arrays(base_run, final),
        'streamed, killed and resumed vs device-resident',
    )
    got, want = h.train_steps(rerun.workdir), h.train_steps(base_run)
    assert [got[s]['loss'] for s in range(1, final + 1)] == [
        want[s]['loss'] for s in range(1, final + 1)
    ]
    val, ref = h.val_epochs(rerun.workdir), h.val_epochs(base_run)
    assert [val[e] for e in (1, 2)] == [ref[e] for e in (1, 2)]


def test_two_streaming_processes_read_their_halves_and_train_like_one(trainer, base_run):
    procs = trainer.result('stream')['procs']
    for p in procs:
        assert p.rc == 0, p.tail()
    for p, (lo, hi) in zip(procs, ((0, 4), (4, 8))):
        assert (
            f'Streamed epoch 2 from step 0: this process reads columns {lo}..{hi} of every '
            f'batch of {h.BATCH}' in p.output()
        ), p.tail()
    workdir, steps = procs[0].workdir, h.PARALLEL_STEPS
    got, want = h.train_steps(workdir), h.train_steps(base_run)
    np.testing.assert_allclose(
        [got[s]['loss'] for s in range(1, steps + 1)],
        [want[s]['loss'] for s in range(1, steps + 1)],
        rtol=1e-4,
    )
    h.assert_trees_close(
        h.flat(load_variables(workdir / 'checkpoints' / str(steps))),
        h.flat(load_variables(base_run / 'checkpoints' / str(steps))),
        '2 streaming processes vs 1 device',
        rtol=1e-4,
        atol=1e-5,
    )
    val, ref = h.val_epochs(workdir), h.val_epochs(base_run)
    assert [val[e]['accuracy'] for e in (1, 2)] == [ref[e]['accuracy'] for e in (1, 2)]
    # Each process saved its own iterator state with the checkpoint.
    data = workdir / 'checkpoints' / str(steps) / 'data'
    assert sorted(p.name for p in data.glob('*.json')) == [
        'process_0-of-2.json',
        'process_1-of-2.json',
    ]
