"""The fault matrix (README "Reliability"): each failure ends in a clear paragraph with its
own exit code, loses nothing already saved, and the same command then finishes the run.

job_faults below injects each fault into a max_steps=8 run of the reference config
(FAULT_SCRIPT patches the checkpointer, evaluator or train step in that process only),
then reruns the same command; the result must be the reference run's state at step 8."""

import shutil
import subprocess
import sys
from pathlib import Path

import train_harness as h

FAULT_SCRIPT = """
import errno, os, signal, sys
fault, argv = sys.argv[1], sys.argv[2:]
from ghostnet_jax.data import metrics
from ghostnet_jax.training import checkpoints, parallel
calls = {'save': 0, 'eval': 0, 'step': 0}
save, evaluate, step = (checkpoints.Checkpointer.save, metrics.ExactEvaluator.__call__,
                        parallel.DataParallelStep.step)

def faulty_save(self, *a, **k):
    calls['save'] += 1
    if fault == 'disk_full' and calls['save'] == 2:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.directory))
    out = save(self, *a, **k)
    if fault == 'sigterm_in_save' and calls['save'] == 1:
        os.kill(os.getpid(), signal.SIGTERM)
    return out

def faulty_eval(self, *a, **k):
    calls['eval'] += 1
    if fault == 'sigterm_in_eval' and calls['eval'] == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return evaluate(self, *a, **k)

def faulty_step(self, *a, **k):
    calls['step'] += 1
    if fault == 'sigterm_in_compile' and calls['step'] == 1:
        os.kill(os.getpid(), signal.SIGTERM)   # before the first step compiles
    return step(self, *a, **k)

checkpoints.Checkpointer.save = faulty_save
metrics.ExactEvaluator.__call__ = faulty_eval
parallel.DataParallelStep.step = faulty_step
from ghostnet_jax.cli.process import setup_logging
setup_logging()   # as `python -m ghostnet_jax.train` does
from ghostnet_jax import train
sys.exit(train.main(argv))
"""


FAULTS = ('disk_full', 'sigterm_in_save', 'sigterm_in_eval', 'sigterm_in_compile')


@h.job('faults', after='base')
def job_faults(t: h.Trainer, root: Path) -> dict:
    """Each fault injected into a max_steps=8 run, then the same command rerun; plus a
    workdir that cannot be created and a damaged latest checkpoint."""
    out = {}

    def fault_run(name: str) -> subprocess.CompletedProcess:
        args = [
            f'--config={h.SMOKE}',
            f'--workdir={root / name}',
            *t.base_overrides(),
            *h.BASE_FLAGS,
            f'--config.max_steps={h.PARALLEL_STEPS}',
        ]
        return h.run_pinned(
            [sys.executable, '-c', FAULT_SCRIPT, name, *args], t.env(), root / 'output'
        )

    for name in FAULTS:
        first = fault_run(name)
        left = h.finished_steps(root / name)
        rerun = t.run(
            root / name,
            *h.BASE_FLAGS,
            f'--config.max_steps={h.PARALLEL_STEPS}',
            log_name=f'{name}-rerun',
        )
        out[name] = dict(first=first, left=left, rerun=rerun)
    blocker = root / 'a_file'
    blocker.write_text('not a folder')
    out['unwritable'] = t.run(
        root / 'unwritable',
        f'--workdir={blocker / "run"}',
        f'--config.max_steps={h.PARALLEL_STEPS}',
    )
    damaged = root / 'damaged'
    (damaged / 'checkpoints').mkdir(parents=True)
    for step in (h.STEPS_PER_EPOCH, h.PARALLEL_STEPS):
        shutil.copytree(t.base / 'checkpoints' / str(step), damaged / 'checkpoints' / str(step))
    for f in (damaged / 'checkpoints' / str(h.PARALLEL_STEPS) / 'state').rglob('*'):
        if f.is_file() and f.stat().st_size > 1000:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])  # truncated array data
    out['damaged'] = t.run(damaged, *h.BASE_FLAGS, f'--config.max_steps={3 * h.STEPS_PER_EPOCH}')
    bad = root / 'bad_data'
    shutil.copytree(t.data, bad)
    (bad / 'train' / 'c1' / '05.png').write_bytes(b'not a png at all')
    out['corrupt'] = t.run(
        root / 'corrupt', f'--config.data.source=folder:{bad}', '--config.max_steps=2'
    )
    out['corrupt_skipped'] = t.run(
        root / 'corrupt_skipped',
        f'--config.data.source=folder:{bad}',
        '--config.data.skip_corrupt_images=True',
        '--config.max_steps=2',
    )
    return out


EPOCH, END = h.STEPS_PER_EPOCH, h.PARALLEL_STEPS


def _check_rerun(trainer, base_run, fault, resumed_from):
    rerun = fault['rerun']
    assert rerun.rc == 0, rerun.tail()
    assert f'Resumed from step {resumed_from}' in rerun.output(), rerun.tail()
    h.assert_trees_equal(
        h.state_arrays(rerun.workdir, END),
        h.state_arrays(base_run, END),
        'rerun after the fault vs reference',
    )
    # The history too, the train loss of an epoch resumed half-way included.
    drop = lambda hist: [{k: v for k, v in r.items() if k != 'epoch_time_s'} for r in hist]
    assert drop(h.host_state(rerun.workdir, END)['history']) == drop(
        h.host_state(base_run, END)['history']
    )


def test_disk_full_during_a_save(trainer, base_run):
    fault = trainer.result('faults')['disk_full']
    first = fault['first']
    assert first.returncode == 6, first.stderr[-3000:]
    assert 'No space left on device' in first.stderr and 'disk is full' in first.stderr
    assert 'Traceback' not in first.stderr
    assert fault['left'] == [EPOCH]  # the earlier checkpoint is intact
    _check_rerun(trainer, base_run, fault, EPOCH)


def test_sigterm_while_compiling_saving_or_evaluating(trainer, base_run):
    faults = trainer.result('faults')
    # SIGTERM before the first step: the first sync point (log_every_steps=2) saves.
    # During the first save (end of epoch 1): the next sync point saves again.
    # During epoch 2's validation: the decision after it saves the validated epoch.
    for name, saved in (
        ('sigterm_in_compile', [2]),
        ('sigterm_in_save', [EPOCH, EPOCH + 2]),
        ('sigterm_in_eval', [EPOCH, END]),
    ):
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
    assert f'Checkpoint {run.workdir / "checkpoints" / str(END)} is damaged' in run.output(), (
        run.tail()
    )
    assert f'Resumed from step {EPOCH}' in run.output(), run.tail()
    aside = [p.name for p in (run.workdir / 'checkpoints').iterdir() if '.damaged-' in p.name]
    assert len(aside) == 1 and aside[0].startswith(f'{END}.damaged-'), aside  # kept, not deleted
    step = 3 * EPOCH
    h.assert_trees_equal(
        h.state_arrays(run.workdir, step),
        h.state_arrays(base_run, step),
        'resumed from the previous checkpoint vs reference',
    )


def test_corrupt_image_is_named_or_skipped_by_choice(trainer):
    faults = trainer.result('faults')
    run = faults['corrupt']
    assert run.rc == 4, run.tail()
    last = [line for line in run.output().splitlines() if line.strip()][-1]
    assert '05.png' in last and 'skip_corrupt_images' in last, run.tail()
    assert 'Traceback' not in run.output()
    skipped = faults['corrupt_skipped']
    assert skipped.rc == 0, skipped.tail()
    assert '05.png' in skipped.output(), skipped.tail()  # logged by name
