"""Helpers for the end-to-end trainer tests (tests/test_train_*.py).

Every training run is the real CLI (`python -m ghostnet_jax.train`) in a subprocess, so the
device count (XLA_FLAGS), signals and multi-process runs behave as for a user. All runs of a
test session share one persistent compilation cache, so a program compiled by one run (same
model, optimizer, device count) is loaded, not recompiled, by the next.

The runs are "jobs" (JOBS below) run by a small thread pool: conftest.base_run starts the
jobs of the selected tests that do not need the reference run while that run trains, and
the others as soon as it is done, so that both cores stay busy; a test then waits for its
job's result (`trainer.result(name)`) and makes its assertions.

Set GHOSTNET_JAX_TEST_COMPILE_CACHE=/some/dir to keep that cache across sessions (faster
reruns while developing); by default it lives in the session's tmp dir.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import forked_cli

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / 'configs' / 'smoke.py')

NUM_CLASSES, PER_CLASS, IMAGE_SIZE = 3, 16, 16
# configs/smoke.py splits train[:80%] / train[80%:] of the 48 interleaved (round-robin) files
# as TFDS would: round(0.8 * 48) = round(38.4) = 38 (13 + 13 + 12 per class) and 10.
TRAIN_EXAMPLES, VAL_EXAMPLES = 38, 10
BATCH = 8                                   # smoke.py's global batch
STEPS_PER_EPOCH = TRAIN_EXAMPLES // BATCH   # 4 (last partial batch dropped)
EPOCHS = 6                                  # every 1-device run uses the same schedule
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH      # 24
# Compiling is about half of the suite's CPU time, so every test process and run compiles
# the cheap way, and comparisons between runs hold (all use the same flags):
# - unoptimized code generation (-O0): a cold run ~22 -> ~15 CPU-s;
# - XLA:CPU's older elemental emitters instead of its fusion emitters: compiling a
#   ghostnet_cifar_tiny train step took 1.1 CPU-s instead of 5.1, GhostNetV3-tiny's 1.9
#   instead of 7.2, ResNet-56's 2.8 instead of 4.8 (2-core AMD EPYC, 2026-12-07). The flag
#   is dropped where this jaxlib does not know it (XLA aborts on unknown flags).
# GHOSTNET_JAX_TEST_XLA_FLAGS overrides both (the probe's answer is kept there for the
# processes this session starts).
def _test_xla_flags() -> str:
    flags = '--xla_backend_optimization_level=0'
    emitters = '--xla_cpu_use_fusion_emitters=false'
    probe = subprocess.run([sys.executable, '-c', 'import jax; jax.devices()'],
                           env=dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=f'{flags} {emitters}'),
                           capture_output=True)
    return f'{flags} {emitters}' if probe.returncode == 0 else flags


if 'GHOSTNET_JAX_TEST_XLA_FLAGS' not in os.environ:
    os.environ['GHOSTNET_JAX_TEST_XLA_FLAGS'] = _test_xla_flags()
XLA_TEST_FLAGS = os.environ['GHOSTNET_JAX_TEST_XLA_FLAGS']
# The reference run's flags (see conftest.base_run): early stopping that must not fire.
BASE_FLAGS = ('--config.callbacks.early_stopping.enabled=True',
              '--config.callbacks.early_stopping.monitor=train_loss',
              '--config.callbacks.early_stopping.mode=min',
              '--config.callbacks.early_stopping.patience=2')


def make_dataset(root: Path, num_classes: int = NUM_CLASSES, per_class: int = PER_CLASS,
                 seed: int = 0) -> Path:
    """root/train/c<k>/<i>.png: a class-dependent colour plus noise (learnable in a few steps)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
    for c in range(num_classes):
        d = root / 'train' / f'c{c}'
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.normal(0, 40, (IMAGE_SIZE, IMAGE_SIZE, 3))
            img = np.clip(colours[c] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f'{i:02d}.png')
    return root


_cores = itertools.count()


def pin_to_one_core(pid: int) -> None:
    """Keeps a 1-device CLI run on one core (the next one, round robin). The tests' tiny
    programs gain nothing from XLA's second thread, and with many runs at once its thread
    pools only spin: pinned, a warm reference run took 6.5 CPU-s instead of 7.7, in no
    more wall time (2-core AMD EPYC, 2026-12-07). Runs with several devices in one process
    are left alone (their collectives wait for a thread per device)."""
    if not hasattr(os, 'sched_setaffinity'):
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:
        try:
            os.sched_setaffinity(pid, {cores[next(_cores) % len(cores)]})
        except OSError:   # the process already ended
            pass


def run_pinned(args: list[str], env: dict, tmp: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """subprocess.run(args, capture_output=True, text=True) of a 1-device run, pinned,
    started in REPO by forked_cli (its output passes through files in `tmp`)."""
    return forked_cli.run(args, env, REPO, tmp, timeout, pin=pin_to_one_core)


# Work that a test module starts when the session starts (name -> function(root)), like
# JOBS: registered with @background(name) at import, started by conftest, fetched with
# trainer.result(name).
BACKGROUND: dict = {}


def background(name: str):
    def register(fn):
        BACKGROUND[name] = fn
        return fn
    return register


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Run:
    """A CLI training run in a subprocess; output goes to <workdir>.log."""

    def __init__(self, proc: subprocess.Popen, workdir: Path, log: Path, args: list[str]):
        self.proc, self.workdir, self.log, self.args = proc, workdir, log, args

    def wait(self, timeout: float = 600) -> 'Run':
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f'run timed out after {timeout} s: {self.args}\n{self.tail()}')
        return self

    @property
    def rc(self) -> int | None:
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors='replace') if self.log.exists() else ''

    def tail(self, n: int = 6000) -> str:
        return self.output()[-n:]

    def check(self, timeout: float = 600) -> 'Run':
        self.wait(timeout)
        assert self.rc == 0, f'exit code {self.rc} for {self.args}\n{self.tail()}'
        return self

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)


class Trainer:
    """Starts CLI runs on the session's dataset with the shared caches."""

    def __init__(self, root: Path, data: Path, data_cache: Path, compile_cache: Path):
        self.root, self.data, self.data_cache, self.compile_cache = root, data, data_cache, compile_cache
        self.base: Path | None = None    # the reference run's workdir, once it has finished
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
        self._jobs: dict[str, concurrent.futures.Future] = {}
        self._after: set[str] = set()   # jobs that need the reference run first
        self._runs: list[Run] = []

    def launch(self, name: str) -> concurrent.futures.Future:
        """Starts job `name` (JOBS, or a test module's BACKGROUND work) unless it already
        runs; its files go under root/name."""
        if name not in self._jobs:
            if name in JOB_FOLLOWS:
                self._jobs[name] = self._follow(name, self.launch(JOB_FOLLOWS[name]))
            elif name in self._after:
                self._jobs[name] = self._pool.submit(self._after_base, name)
            elif name in JOBS:
                self._jobs[name] = self._pool.submit(JOBS[name], self, self.root / name)
            else:
                self._jobs[name] = self._pool.submit(BACKGROUND[name], self.root / name)
        return self._jobs[name]

    def result(self, name: str, timeout: float = 900):
        return self.launch(name).result(timeout)

    def launch_base(self, *flags: str, before: list[str] = (), after: list[str] = ()) -> None:
        """Starts the reference run (job 'base', its workdir root/base) and the jobs
        `before` beside it; the jobs `after` (which read its checkpoints, or would compile
        its programs before its run has cached them) start when it has finished."""
        self._after.update(after)
        if 'base' not in self._jobs:
            def base() -> Path:
                workdir = self.root / 'base'
                self.run(workdir, *flags).check()
                self.base = workdir
                for name in after:
                    self.launch(name)
                return workdir
            self._jobs['base'] = self._pool.submit(base)
        for name in before:
            self.launch(name)

    def _follow(self, name: str, first: concurrent.futures.Future) -> concurrent.futures.Future:
        """Job `name`, started when the job behind `first` has finished (whatever its
        outcome), without holding a worker while it waits."""
        chained = concurrent.futures.Future()

        def start(_):
            job = self._pool.submit(JOBS[name], self, self.root / name)
            job.add_done_callback(lambda done: chained.set_exception(done.exception())
                                  if done.exception() else chained.set_result(done.result()))
        first.add_done_callback(start)
        return chained

    def _after_base(self, name: str):
        self.result('base')   # at once, unless a test asked for this job before that
        return JOBS[name](self, self.root / name)

    def close(self) -> None:
        """Kills whatever still runs (jobs of tests that were not selected or failed)."""
        for future in self._jobs.values():
            future.cancel()
        for run in self._runs:
            if run.proc.poll() is None:
                run.proc.kill()
        self._pool.shutdown(wait=True)

    def env(self, devices: int = 1) -> dict:
        env = dict(os.environ)
        env.update(
            XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} {XLA_TEST_FLAGS}',
            JAX_PLATFORMS='cpu',
            JAX_COMPILATION_CACHE_DIR=str(self.compile_cache),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
            GHOSTNET_JAX_CACHE=str(self.data_cache),
            PYTHONUNBUFFERED='1',
            # glibc's malloc on every machine, as on CI (no system allocator there): a run
            # then costs and behaves the same wherever the suite runs, and no forked run
            # (forked_cli) restarts itself. tests/test_cli_process.py tests the choice.
            GHOSTNET_JAX_ALLOCATOR='off',
        )
        env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
        return env

    def base_overrides(self, data: Path | None = None) -> list[str]:
        return [
            f'--config.data.source=folder:{data or self.data}',
            f'--config.data.cache_dir={self.data_cache}',
            '--config.model.conv_impl=native',   # compiles ~2x faster than 'shifted' on CPU
            f'--config.num_epochs={EPOCHS}',
            '--config.checkpoint.max_to_keep=100',   # keep every epoch for comparisons
            '--config.report=False',   # test_study_report covers it; plots cost seconds a run
            # Evaluation averages each image with its mirror, in every run: evaluate,
            # predict, report and every export must reproduce what results.json says.
            '--config.eval_flip=True',
        ]

    def start(self, workdir: Path, *overrides: str, devices: int = 1, config: str = SMOKE,
              data: Path | None = None, log_name: str | None = None) -> Run:
        workdir = Path(workdir)
        log = workdir.parent / f'{log_name or workdir.name}.log'
        args = [sys.executable, '-m', 'ghostnet_jax.train', f'--config={config}',
                f'--workdir={workdir}', *self.base_overrides(data), *overrides]
        workdir.parent.mkdir(parents=True, exist_ok=True)
        proc = forked_cli.start(args, self.env(devices), REPO, log)
        if devices == 1:
            pin_to_one_core(proc.pid)
        run = Run(proc, workdir, log, args)
        self._runs.append(run)
        return run

    def cli(self, args: list, devices: int = 1, timeout: float = 300,
            cwd: Path = REPO) -> subprocess.CompletedProcess:
        """subprocess.run([python, *args], capture_output=True, text=True) in this
        trainer's environment, started by forked_cli."""
        return forked_cli.run([sys.executable, *map(str, args)], self.env(devices), cwd,
                              self.root / 'output', timeout)

    def run(self, workdir: Path, *overrides: str, timeout: float = 600, **kwargs) -> Run:
        return self.start(workdir, *overrides, **kwargs).wait(timeout)


# ------------------------------------------------------------------------- reading results


def metrics(workdir: Path) -> list[dict]:
    path = Path(workdir) / 'metrics.jsonl'
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_steps(workdir: Path) -> dict[int, dict]:
    """Per-step train records by step (the last one written wins: a resumed run may
    repeat steps that were trained but not checkpointed before it was killed)."""
    return {r['step']: r for r in metrics(workdir) if r['split'] == 'train' and 'loss' in r}


def val_epochs(workdir: Path) -> dict[int, dict]:
    return {r['epoch']: r for r in metrics(workdir) if r['split'] == 'val'}


def finished_steps(workdir: Path) -> list[int]:
    d = Path(workdir) / 'checkpoints'
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def wait_for_checkpoint(run: Run, step: int, timeout: float = 600, poll: float = 0.01) -> None:
    """Polls until checkpoints/<step> is finished (orbax renames the tmp dir when done)."""
    path = run.workdir / 'checkpoints' / str(step)
    deadline = time.time() + timeout
    while not path.is_dir():
        if run.proc.poll() is not None:
            raise AssertionError(f'run ended (rc {run.rc}) before checkpoint {step}\n{run.tail()}')
        if time.time() > deadline:
            run.proc.kill()
            raise AssertionError(f'no checkpoint {step} after {timeout} s\n{run.tail()}')
        time.sleep(poll)


def host_state(workdir: Path, step: int) -> dict:
    return json.loads((Path(workdir) / 'checkpoints' / str(step) / 'host' / 'metadata').read_text())


def state_arrays(workdir: Path, step: int) -> dict[str, np.ndarray]:
    """Every array of checkpoint `step`'s train state (params, batch_stats, opt_state, step,
    ...) as numpy, keyed by path."""
    import jax
    import orbax.checkpoint as ocp
    item = Path(workdir).absolute() / 'checkpoints' / str(step) / 'state'
    ckptr = ocp.PyTreeCheckpointer()
    tree = ckptr.metadata(item).item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    restored = ckptr.restore(item, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    return flat(restored)


def flat(tree) -> dict[str, np.ndarray]:
    import jax
    return {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def assert_trees_equal(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), f'{what}: different leaves {set(a) ^ set(b)}'
    differ = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not differ, f'{what}: {len(differ)} of {len(a)} arrays differ, e.g. {differ[:5]}'


def assert_trees_close(a: dict, b: dict, what: str, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys(), f'{what}: different leaves {set(a) ^ set(b)}'
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=f'{what}: {k}')



# ------------------------------------------------------------------------------------ jobs
# Each job starts its runs, waits for them and returns what its test asserts on.

PARALLEL_STEPS = 2 * STEPS_PER_EPOCH
DIST_STEPS = 4 * STEPS_PER_EPOCH   # two-process runs: long enough to be signalled mid-run
ES_PATIENCE, PLATEAU_PATIENCE = 3, 2


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


# GhostNetV2/V3 ride along two jobs instead of adding runs: V2's DFC attention trains in
# bfloat16 with EMA (job_ema), V3's branches and DFC attention resume exactly across a
# low-res epoch (job_low_res_budget).
EMA_MODEL, LOW_RES_MODEL = 'ghostnetv2_cifar_tiny', 'ghostnetv3_cifar_tiny'


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
