"""The end-to-end trainer tests' background runs ("jobs"): each starts its CLI runs through
train_harness.Trainer, waits for them and returns what its test asserts on. conftest starts
the jobs of the selected tests at the start of the session (JOBS, JOB_FOLLOWS) and a test waits
for its job with `trainer.result(name)`; the lengths and settings the tests assert on are
train_harness's constants."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import forked_cli

import numpy as np

from train_harness import (BASE_FLAGS, DIST_STEPS, EMA_MODEL, ES_PATIENCE, LOW_RES_MODEL,
                           PARALLEL_STEPS, PLATEAU_PATIENCE, REPO, SMOKE, STEPS_PER_EPOCH, Run,
                           Trainer, finished_steps, free_port, host_state, make_dataset,
                           one_core, run_pinned, train_steps, val_epochs, wait_for_checkpoint)

def job_parallel(t: Trainer, root: Path) -> dict[str, Run]:
    """jit and pmap on 8 fake devices, the first two epochs of the reference run."""
    # One after the other: pmap then loads init/eval/data programs jit compiled from the cache.
    return {mode: t.run(root / mode, f'--config.parallel={mode}',
                        f'--config.max_steps={PARALLEL_STEPS}', '--config.model.dropout_rate=0.0',
                        devices=8)
            for mode in ('jit', 'pmap')}


def job_distributed(t: Trainer, root: Path) -> list[Run]:
    """Two jax.distributed processes with one CPU device each, sharing one workdir (also the
    uninterrupted reference of job_distributed_sigterm)."""
    # A process whose peer died is aborted by JAX (SIGABRT); the timeout is a backstop.
    return [p.wait() for p in _distributed(t, root / 'run', f'--config.max_steps={DIST_STEPS}')]


def job_early_stopping(t: Trainer, root: Path) -> Run:
    """val_accuracy can never improve by more than min_delta=1.0 and val_loss never by 100:
    early stopping must fire after ES_PATIENCE + 1 epochs, the plateau halve the lr after
    PLATEAU_PATIENCE + 1."""
    return t.run(root / 'run',
                 '--config.callbacks.early_stopping.enabled=True',
                 '--config.callbacks.early_stopping.monitor=val_accuracy',
                 '--config.callbacks.early_stopping.min_delta=1.0',
                 f'--config.callbacks.early_stopping.patience={ES_PATIENCE}',
                 '--config.callbacks.reduce_lr_on_plateau.enabled=True',
                 '--config.callbacks.reduce_lr_on_plateau.monitor=val_loss',
                 '--config.callbacks.reduce_lr_on_plateau.min_delta=100.0',
                 f'--config.callbacks.reduce_lr_on_plateau.patience={PLATEAU_PATIENCE}',
                 '--config.callbacks.reduce_lr_on_plateau.factor=0.5')


def job_nonfinite(t: Trainer, root: Path) -> Run:
    """Resumes the reference run's first checkpoint with an absurd learning rate: the first
    step after the resume is still finite, its update blows the weights up."""
    workdir = root / 'run'
    step = str(STEPS_PER_EPOCH)
    shutil.copytree(t.base / 'checkpoints' / step, workdir / 'checkpoints' / step)
    return t.run(workdir, '--config.optimizer.learning_rate=1e30')


def _interrupted(t: Trainer, root: Path, sig: int, *rerun_flags: str) -> tuple[Run, dict, Run]:
    """A reference-config run that gets `sig` once its first checkpoint is finished, what it
    left behind, and the rerun in the same workdir (with `rerun_flags` added)."""
    run = t.start(root / 'run', *BASE_FLAGS)
    wait_for_checkpoint(run, STEPS_PER_EPOCH)
    run.signal(sig)
    run.wait()
    steps = finished_steps(run.workdir)
    left = dict(rc=run.rc, steps=steps, host=host_state(run.workdir, steps[-1]),
                tmp=sorted(p.name for p in (run.workdir / 'checkpoints').glob('*tmp*')),
                results=(run.workdir / 'results.json').exists(),
                trained=max(train_steps(run.workdir)), validated=sorted(val_epochs(run.workdir)))
    return run, left, t.run(run.workdir, *BASE_FLAGS, *rerun_flags, log_name='rerun')


def job_sigkill(t: Trainer, root: Path):
    # A harmless change on resume (logging cadence, retention) is accepted silently.
    return _interrupted(t, root, signal.SIGKILL, '--config.log_every_steps=3',
                        '--config.checkpoint.max_to_keep=99')


def job_sigterm(t: Trainer, root: Path):
    return _interrupted(t, root, signal.SIGTERM)


INIT_FROM_SCRIPT = """
import sys, numpy as np, jax
from ghostnet_jax.configs import smoke
from ghostnet_jax.training.experiment import build_experiment
from ghostnet_jax.training.parallel import make_mesh
data, cache, base, out_path = sys.argv[1:]
config = smoke.get_config()
config.data.source = 'folder:' + data
config.data.cache_dir = cache
config.model.conv_impl = 'native'
out = {}
for name, init_from in (('fresh', None), ('tuned', base)):
    config.init_from = init_from
    state = build_experiment(config, make_mesh()).state
    tree = {'params': state.params, 'batch_stats': state.batch_stats}
    for p, v in jax.tree_util.tree_leaves_with_path(tree):
        out[name + jax.tree_util.keystr(p)] = np.asarray(v)
np.savez(out_path, **out)
"""


def job_init_from(t: Trainer, root: Path) -> tuple[subprocess.CompletedProcess, dict, dict]:
    """The initial state of a 2-class run with init_from=<the 3-class reference workdir>,
    and of the same run without init_from: (process, tuned, fresh) by leaf path."""
    data2 = make_dataset(root / 'data2', num_classes=2, seed=1)
    out = root / 'vars.npz'
    proc = run_pinned([sys.executable, '-c', INIT_FROM_SCRIPT, str(data2), str(t.data_cache),
                       str(t.base), str(out)], t.env(), root)
    arrays = dict(np.load(out)) if out.exists() else {}
    pick = lambda name: {k[len(name):]: v for k, v in arrays.items() if k.startswith(name)}
    return proc, pick('tuned'), pick('fresh')


# ------------------------------------------------------------------ reliability jobs

# Jobs that start when another has finished: job_distributed_sigterm's processes then load
# the two-process programs job_distributed compiled (started together, all four compiled
# the same programs cold, ~11 CPU-s each).
JOB_FOLLOWS = {'distributed_sigterm': 'distributed'}

def _distributed(t: Trainer, workdir: Path, *overrides: str, log_prefix: str = 'process',
                 port: int | None = None) -> list[Run]:
    port = port or free_port()
    return [t.start(workdir, '--config.distributed.enabled=True',
                    f'--config.distributed.coordinator_address=127.0.0.1:{port}',
                    '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}',
                    *overrides, devices=1, log_name=f'{log_prefix}{i}')
            for i in range(2)]


def job_distributed_sigterm(t: Trainer, root: Path) -> dict:
    """Two processes; once the first checkpoint exists only process 1 gets SIGTERM. Then
    both are rerun in the same workdir."""
    procs = _distributed(t, root / 'run', f'--config.max_steps={DIST_STEPS}')
    wait_for_checkpoint(procs[0], STEPS_PER_EPOCH)
    procs[1].signal(signal.SIGTERM)
    for p in procs:
        p.wait()
    steps = finished_steps(procs[0].workdir)
    left = dict(rc=[p.rc for p in procs], steps=steps, outputs=[p.output() for p in procs],
                results=(root / 'run' / 'results.json').exists())
    reruns = [p.wait() for p in _distributed(t, root / 'run', f'--config.max_steps={DIST_STEPS}',
                                             log_prefix='rerun')]
    pmap = [p.wait(120) for p in _distributed(t, root / 'pmap', '--config.parallel=pmap',
                                              log_prefix='pmap')]
    return dict(procs=procs, left=left, reruns=reruns, pmap=pmap)


def job_final_weights(t: Trainer, root: Path) -> dict:
    """Which weights results.json evaluates: early stopping on val_loss that never fires,
    with restore_best on and off; then the max_steps run continued to the full length."""
    common = ('--config.callbacks.early_stopping.enabled=True',
              '--config.callbacks.early_stopping.monitor=val_loss',
              '--config.callbacks.early_stopping.mode=min',
              '--config.callbacks.early_stopping.patience=100')
    runs = {name: t.start(root / name, *common, f'--config.max_steps={steps}',
                          f'--config.callbacks.early_stopping.restore_best={flag}')
            for name, steps, flag in (('restore_best', 3 * STEPS_PER_EPOCH, True),
                                      ('last', PARALLEL_STEPS, False))}
    results = {}
    for name, run in runs.items():
        run.wait()
        path = run.workdir / 'results.json'
        results[name] = json.loads(path.read_text()) if path.exists() else None
    # The max_steps run continued without max_steps: it must train on to the full length.
    runs['continued'] = t.run(root / 'last', *common,
                              '--config.callbacks.early_stopping.restore_best=False',
                              log_name='continued')
    return dict(runs=runs, results=results)


def job_resume_rules(t: Trainer, root: Path) -> dict[str, Run]:
    """Reruns of finished runs and resumes that change the experiment."""
    finished = root / 'finished'
    shutil.copytree(t.base, finished)
    runs = {'finished': t.run(finished, *BASE_FLAGS, log_name='finished')}
    changed = root / 'changed'
    (changed / 'checkpoints').mkdir(parents=True)
    shutil.copytree(t.base / 'checkpoints' / str(STEPS_PER_EPOCH),
                    changed / 'checkpoints' / str(STEPS_PER_EPOCH))
    runs['changed'] = t.run(changed, *BASE_FLAGS, '--config.seed=1', '--config.batch_size=4',
                            log_name='changed')
    return runs


def job_device_counts(t: Trainer, root: Path) -> dict[str, Run]:
    """A 1-device checkpoint resumed on 8 devices (evaluating in batches of 8, right after
    the restore: the pattern that aborted in XLA's all-reduce), and an 8-device checkpoint
    resumed on 1 device; both to the reference run's full length."""
    parallel = t.result('parallel')['jit'].workdir
    runs = {}
    for name, source, devices in (('1to8', t.base, 8), ('8to1', parallel, 1)):
        workdir = root / name
        (workdir / 'checkpoints').mkdir(parents=True)
        step = str(PARALLEL_STEPS if name == '8to1' else STEPS_PER_EPOCH)
        shutil.copytree(source / 'checkpoints' / step, workdir / 'checkpoints' / step)
        # configs/smoke.py evaluates in batches of 8 and has no dropout.
        runs[name] = t.run(workdir, *BASE_FLAGS, devices=devices)
    return runs




def job_ema(t: Trainer, root: Path) -> Run:
    """EMA (with BatchNorm statistics), label smoothing and bfloat16 compute together."""
    return t.run(root / 'run', '--config.ema_decay=0.9', '--config.label_smoothing=0.1',
                 '--config.dtype=bfloat16', f'--config.max_steps={PARALLEL_STEPS}',
                 f'--config.model.name={EMA_MODEL}')


def job_time_budget(t: Trainer, root: Path) -> dict:
    """A time-budgeted run stopped at max_steps, resumed under another budget to more steps,
    and the same length trained without a budget (num_epochs = the fitted value); plus a
    budget too small for one epoch. Warmup spans the first epoch, so the refit after it
    leaves no trace and the fitted length alone reproduces the run."""
    warmup = '--config.optimizer.warmup_epochs=1'
    too_small = t.start(root / 'too_small', '--config.time_budget_minutes=0.001')
    runs = {'first': t.run(root / 'budget', '--config.time_budget_minutes=10', warmup,
                           f'--config.max_steps={STEPS_PER_EPOCH}', log_name='first')}
    config_after_first = json.loads((root / 'budget' / 'config.json').read_text())
    fitted = json.loads((root / 'budget' / 'results.json').read_text())['num_epochs']
    runs['resumed'] = t.run(root / 'budget', '--config.time_budget_minutes=20', warmup,
                            f'--config.max_steps={PARALLEL_STEPS}', log_name='resumed')
    runs['reference'] = t.run(root / 'reference', f'--config.num_epochs={fitted}', warmup,
                              f'--config.max_steps={PARALLEL_STEPS}')
    runs['too_small'] = too_small.wait()
    # A run that started without a budget keeps its length when a budget appears.
    unbudgeted = root / 'unbudgeted'
    shutil.copytree(root / 'reference', unbudgeted)
    runs['late_budget'] = t.run(unbudgeted, '--config.time_budget_minutes=10', warmup,
                                f'--config.num_epochs={fitted}',
                                f'--config.max_steps={PARALLEL_STEPS + STEPS_PER_EPOCH}',
                                log_name='late_budget')
    return {'runs': runs, 'fitted': fitted, 'config_after_first': config_after_first}


LOW_RES_FLAGS = ('--config.data.low_res.size=8',
                 # Any tiny fraction means exactly one small epoch, whatever length fits.
                 '--config.data.low_res.epochs_fraction=0.000001')


def job_low_res_budget(t: Trainer, root: Path) -> dict:
    """A budgeted run whose first epoch trains on 8x8 images: stopped inside that epoch,
    resumed across the switch to full size (the refit after epoch 1, which also times the
    full-size step, happens in the resumed process), resumed again for epoch 3, and the
    same length trained straight through without a budget."""
    flags = ('--config.optimizer.warmup_epochs=1', *LOW_RES_FLAGS,
             f'--config.model.name={LOW_RES_MODEL}')
    workdir = root / 'budget'
    runs = {'first': t.run(workdir, '--config.time_budget_minutes=10', *flags,
                           '--config.max_steps=2', log_name='first')}
    runs['resumed'] = t.run(workdir, '--config.time_budget_minutes=10', *flags,
                            f'--config.max_steps={PARALLEL_STEPS}', log_name='resumed')
    runs['third_epoch'] = t.run(workdir, '--config.time_budget_minutes=10', *flags,
                                f'--config.max_steps={3 * STEPS_PER_EPOCH}',
                                log_name='third_epoch')
    fitted = json.loads((workdir / 'results.json').read_text())['num_epochs']
    runs['reference'] = t.run(root / 'reference', f'--config.num_epochs={fitted}', *flags,
                              f'--config.max_steps={3 * STEPS_PER_EPOCH}')
    return {'runs': runs, 'fitted': fitted}


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


def job_faults(t: Trainer, root: Path) -> dict:
    """Each fault injected into a max_steps=8 run, then the same command rerun; plus a
    workdir that cannot be created and a damaged latest checkpoint."""
    out = {}

    def fault_run(name: str) -> subprocess.CompletedProcess:
        args = [f'--config={SMOKE}', f'--workdir={root / name}', *t.base_overrides(), *BASE_FLAGS,
                f'--config.max_steps={PARALLEL_STEPS}']
        return run_pinned([sys.executable, '-c', FAULT_SCRIPT, name, *args], t.env(),
                          root / 'output')

    for name in FAULTS:
        first = fault_run(name)
        left = finished_steps(root / name)
        rerun = t.run(root / name, *BASE_FLAGS, f'--config.max_steps={PARALLEL_STEPS}',
                      log_name=f'{name}-rerun')
        out[name] = dict(first=first, left=left, rerun=rerun)
    blocker = root / 'a_file'
    blocker.write_text('not a folder')
    out['unwritable'] = t.run(root / 'unwritable', f'--workdir={blocker / "run"}',
                              f'--config.max_steps={PARALLEL_STEPS}')
    damaged = root / 'damaged'
    (damaged / 'checkpoints').mkdir(parents=True)
    for step in (STEPS_PER_EPOCH, PARALLEL_STEPS):
        shutil.copytree(t.base / 'checkpoints' / str(step), damaged / 'checkpoints' / str(step))
    for f in (damaged / 'checkpoints' / str(PARALLEL_STEPS) / 'state').rglob('*'):
        if f.is_file() and f.stat().st_size > 1000:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])   # truncated array data
    out['damaged'] = t.run(damaged, *BASE_FLAGS, f'--config.max_steps={3 * STEPS_PER_EPOCH}')
    bad = root / 'bad_data'
    shutil.copytree(t.data, bad)
    (bad / 'train' / 'c1' / '05.png').write_bytes(b'not a png at all')
    out['corrupt'] = t.run(root / 'corrupt', f'--config.data.source=folder:{bad}',
                           '--config.max_steps=2')
    out['corrupt_skipped'] = t.run(root / 'corrupt_skipped', f'--config.data.source=folder:{bad}',
                                   '--config.data.skip_corrupt_images=True', '--config.max_steps=2')
    return out


def job_threads(t: Trainer, root: Path) -> dict[str, Run]:
    """The reference run with one XLA:CPU thread until the end of epoch 2, then resumed with
    two threads to the full length."""
    workdir = root / 'run'
    first = t.run(workdir, *BASE_FLAGS, f'--config.max_steps={PARALLEL_STEPS}', threads=1)
    return {'first': first, 'resumed': t.run(workdir, *BASE_FLAGS, threads=2, log_name='resumed')}


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
    except FileNotFoundError:   # ended
        return False


def job_suspended(t: Trainer, root: Path) -> dict:
    """The reference run, stopped (SIGSTOP) for SUSPEND_S seconds while epoch 2's checkpoint
    is written in the background, then continued (SIGCONT): with a save deadline shorter
    than the stop (the save fails) and with the default (no deadline: it is waited for)."""
    out = {}
    root.mkdir(parents=True, exist_ok=True)
    for name, flags in (('deadline', (f'--config.checkpoint.save_timeout_s={SAVE_TIMEOUT_S}',)),
                        ('default', (f'--config.max_steps={PARALLEL_STEPS}',))):
        workdir = root / name
        args = [sys.executable, '-c', SUSPEND_SCRIPT, f'--config={SMOKE}', f'--workdir={workdir}',
                *t.base_overrides(), *BASE_FLAGS, *flags]
        log = root / f'{name}.log'
        proc = forked_cli.start(args, t.env(), REPO, log, cpus=one_core())
        run = Run(proc, workdir, log, args)
        deadline = time.time() + 300
        while not _stopped(proc.pid):
            assert proc.poll() is None, f'ended before it was suspended\n{run.tail()}'
            assert time.time() < deadline, f'never suspended\n{run.tail()}'
            time.sleep(0.05)
        stopped_at = finished_steps(workdir)
        time.sleep(SUSPEND_S)
        proc.send_signal(signal.SIGCONT)
        out[name] = dict(run=run.wait(), stopped_at=stopped_at)
    return out


STREAM_FLAGS = ('--config.data.pipeline=stream', '--config.data.stream.workers=0')


def job_stream(t: Trainer, root: Path) -> dict:
    """The reference run streamed, checkpointing every 2 steps, SIGKILLed once a checkpoint
    inside epoch 2 (step 6) is finished, then rerun to the end of epoch 2; and two
    streaming processes."""
    flags = (*BASE_FLAGS, *STREAM_FLAGS, '--config.checkpoint.every_steps=2')
    run = t.start(root / 'run', *flags)
    wait_for_checkpoint(run, STEPS_PER_EPOCH + 2)
    run.signal(signal.SIGKILL)
    run.wait()
    # A kill that came a little later would have left more: resume from step 6 whatever
    # the loop reached (what a kill right after that save leaves).
    later = [s for s in finished_steps(run.workdir) if s > STEPS_PER_EPOCH + 2]
    for step in later:
        shutil.rmtree(run.workdir / 'checkpoints' / str(step))
    rerun = t.run(run.workdir, *flags, f'--config.max_steps={PARALLEL_STEPS}', log_name='rerun')
    procs = [p.wait() for p in _distributed(t, root / 'two', *STREAM_FLAGS,
                                            f'--config.max_steps={PARALLEL_STEPS}')]
    return dict(killed=run, removed=later, rerun=rerun, procs=procs)


JOBS = {name[len('job_'):]: fn for name, fn in globals().items() if name.startswith('job_')}
