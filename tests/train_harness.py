"""Helpers for the end-to-end trainer tests (tests/test_train_*.py).

Every training run is the real CLI (`python -m ghostnet_jax.train`) in a subprocess, so the
device count (XLA_FLAGS), signals and multi-process runs behave as for a user. All runs of a
test session share one persistent compilation cache, so a program compiled by one run (same
model, optimizer, device count) is loaded, not recompiled, by the next.

The runs are "jobs", declared by each test module next to its tests (`@h.job`) and run by a
small thread pool: conftest starts the jobs of the selected modules when the session starts
(those that need the reference run as soon as it is done), so that both cores stay busy; a
test then waits for its job's result (`trainer.result(name)`) and makes its assertions.

Set GHOSTNET_JAX_TEST_COMPILE_CACHE=/some/dir to keep that cache across sessions (faster
reruns while developing); by default it lives in the session's tmp dir.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import forked_cli
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / 'configs' / 'smoke.py')

NUM_CLASSES, PER_CLASS, IMAGE_SIZE = 3, 16, 16
# configs/smoke.py splits train[:80%] / train[80%:] of the 48 interleaved (round-robin) files
# as TFDS would: round(0.8 * 48) = round(38.4) = 38 (13 + 13 + 12 per class) and 10.
TRAIN_EXAMPLES, VAL_EXAMPLES = 38, 10
BATCH = 8  # smoke.py's global batch
STEPS_PER_EPOCH = TRAIN_EXAMPLES // BATCH  # 4 (last partial batch dropped)
EPOCHS = 6  # every 1-device run uses the same schedule
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH  # 24
# The jobs' lengths and settings, which their tests assert on.
PARALLEL_STEPS = 2 * STEPS_PER_EPOCH
DIST_STEPS = 4 * STEPS_PER_EPOCH  # two-process runs: long enough to be signalled mid-run
ES_PATIENCE, PLATEAU_PATIENCE = 3, 2
# GhostNetV2/V3 ride along two jobs instead of adding runs: V2's DFC attention trains in
# bfloat16 with EMA (job_ema), V3's branches and DFC attention resume exactly across a
# low-res epoch (job_low_res_budget).
EMA_MODEL, LOW_RES_MODEL = 'ghostnetv2_cifar_tiny', 'ghostnetv3_cifar_tiny'


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
    probe = subprocess.run(
        [sys.executable, '-c', 'import jax; jax.devices()'],
        env=dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=f'{flags} {emitters}'),
        capture_output=True,
    )
    return f'{flags} {emitters}' if probe.returncode == 0 else flags


if 'GHOSTNET_JAX_TEST_XLA_FLAGS' not in os.environ:
    os.environ['GHOSTNET_JAX_TEST_XLA_FLAGS'] = _test_xla_flags()
XLA_TEST_FLAGS = os.environ['GHOSTNET_JAX_TEST_XLA_FLAGS']
# The reference run's flags (see conftest.base_run): early stopping that must not fire.
BASE_FLAGS = (
    '--config.callbacks.early_stopping.enabled=True',
    '--config.callbacks.early_stopping.monitor=train_loss',
    '--config.callbacks.early_stopping.mode=min',
    '--config.callbacks.early_stopping.patience=2',
)


def make_dataset(
    root: Path, num_classes: int = NUM_CLASSES, per_class: int = PER_CLASS, seed: int = 0
) -> Path:
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


# XLA:CPU's thread count decides a run's last bits: it splits reductions such as BatchNorm's
# batch statistics by thread (docs/reliability.md#determinism). So every run the suite starts
# names its count in NPROC, which XLA reads when the run's backend starts, instead of taking
# it from the CPUs it happens to be allowed at that moment: one thread, whatever machine runs
# the suite. (A process with several devices gets at least one thread per device from XLA:
# 8 for the 8-device runs, again on every machine.)
THREADS = 1
_cores = itertools.count()


def one_core() -> set[int] | None:
    """The CPU for the next 1-device run (round robin), or None where processes cannot be
    pinned. The tests' tiny programs gain nothing from a second core, and with many runs at
    once idle thread pools only spin: pinned, a warm reference run took 6.5 CPU-s instead of
    7.7, in no more wall time (2-core AMD EPYC, 2026-12-07). The pin is set inside the new
    process before it runs anything (forked_cli.start): it never decides the thread count,
    NPROC does."""
    if not hasattr(os, 'sched_setaffinity'):
        return None
    cores = sorted(os.sched_getaffinity(0))
    return {cores[next(_cores) % len(cores)]} if len(cores) > 1 else None


def run_pinned(
    args: list[str], env: dict, tmp: Path, timeout: float = 600
) -> subprocess.CompletedProcess:
    """subprocess.run(args, capture_output=True, text=True) of a 1-device run, pinned,
    started in REPO by forked_cli (its output passes through files in `tmp`)."""
    return forked_cli.run(args, env, REPO, tmp, timeout, cpus=one_core())


@dataclasses.dataclass
class Job:
    """A test module's background work: `fn(trainer, root)` returns what its tests assert on."""

    fn: Callable[['Trainer', Path], Any]
    module: str
    after: str | None  # 'base' (the reference run) or another job, that it starts after


# Every job by name, registered by the test modules that declare them (`job`).
JOBS: dict[str, Job] = {}


def job(name: str, after: str | None = None):
    """Declares a test module's background work, next to the tests that wait for it
    (`trainer.result(name)`). conftest starts the jobs of the selected modules when the
    session starts, so they run while the in-process tests do. `after='base'`: a job
    that reads the reference run's checkpoints, or compiles its programs, starts when that
    run has finished; `after=NAME`: when job NAME has (whatever its outcome)."""

    def register(fn):
        JOBS[name] = Job(fn, fn.__module__, after)
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
        self.root, self.data, self.data_cache, self.compile_cache = (
            root,
            data,
            data_cache,
            compile_cache,
        )
        self.base: Path | None = None  # the reference run's workdir, once it has finished
        self.started = time.monotonic()
        # name -> [started, finished, first asked for, waited] in seconds of the session:
        # the suite's schedule, printed at its end (conftest) to see what it waits for.
        self.timeline: dict[str, list[float | None]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
        self._jobs: dict[str, concurrent.futures.Future] = {}
        self._runs: list[Run] = []

    def launch(self, name: str) -> concurrent.futures.Future:
        """Starts job `name` ('base', the reference run, or one of JOBS) unless it already
        runs, after what it waits for; its files go under root/name."""
        if name not in self._jobs:
            if name == 'base':
                self._jobs[name] = self._pool.submit(self._timed, name, self._base)
            else:
                job = JOBS[name]
                run = lambda: self._timed(name, job.fn, self, self.root / name)
                self._jobs[name] = (
                    self._pool.submit(run)
                    if job.after is None
                    else self._after(self.launch(job.after), run)
                )
        return self._jobs[name]

    def result(self, name: str, timeout: float = 900):
        future, asked = self.launch(name), time.monotonic()
        try:
            return future.result(timeout)
        finally:
            entry = self.timeline.setdefault(name, [None, None, None, 0.0])
            if entry[2] is None:
                entry[2] = asked - self.started
            entry[3] += time.monotonic() - asked

    def _timed(self, name: str, fn: Callable, *args) -> Any:
        entry = self.timeline.setdefault(name, [None, None, None, 0.0])
        entry[0] = time.monotonic() - self.started
        try:
            return fn(*args)
        finally:
            entry[1] = time.monotonic() - self.started

    def schedule(self) -> str:
        """The jobs' timeline: when each started and finished, when a test first waited
        for it and for how long in all (seconds since the session's trainer started)."""

        def cell(x: float | None) -> str:
            return '-' if x is None else f'{x:6.1f}'

        rows = sorted(self.timeline.items(), key=lambda kv: kv[1][0] or 0.0)
        lines = ['job                       start  finish   asked  waited']
        lines += [f'{name:24s} {"  ".join(cell(x) for x in entry)}' for name, entry in rows]
        return '\n'.join(lines)

    def _base(self) -> Path:
        """The uninterrupted 1-device reference run (EPOCHS epochs, a checkpoint every
        epoch), with BASE_FLAGS."""
        workdir = self.root / 'base'
        self.run(workdir, *BASE_FLAGS).check()
        self.base = workdir
        return workdir

    def _after(
        self, first: concurrent.futures.Future, run: Callable[[], Any]
    ) -> concurrent.futures.Future:
        """`run()`, started when `first` has finished (whatever its outcome), without
        holding a worker while it waits."""
        chained = concurrent.futures.Future()

        def start(_):
            job = self._pool.submit(run)
            job.add_done_callback(
                lambda done: (
                    chained.set_exception(done.exception())
                    if done.exception()
                    else chained.set_result(done.result())
                )
            )

        first.add_done_callback(start)
        return chained

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
            NPROC=str(THREADS),
            # Deprecations are errors in the runs too, as in the test process (pyproject.toml).
            PYTHONWARNINGS='error::DeprecationWarning,error::FutureWarning',
        )
        env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')]).rstrip(
            os.pathsep
        )
        return env

    def base_overrides(self, data: Path | None = None) -> list[str]:
        return [
            f'--config.data.source=folder:{data or self.data}',
            f'--config.data.cache_dir={self.data_cache}',
            '--config.model.conv_impl=native',  # compiles ~2x faster than 'shifted' on CPU
            f'--config.num_epochs={EPOCHS}',
            '--config.checkpoint.max_to_keep=100',  # keep every epoch for comparisons
            '--config.report=False',  # test_study_report covers it; plots cost seconds a run
            # Evaluation averages each image with its mirror, in every run: evaluate,
            # predict, report and every export must reproduce what results.json says.
            '--config.eval_flip=True',
        ]

    def start(
        self,
        workdir: Path,
        *overrides: str,
        devices: int = 1,
        config: str = SMOKE,
        data: Path | None = None,
        log_name: str | None = None,
        threads: int | None = None,
    ) -> Run:
        """`threads`: XLA:CPU's thread count instead of the harness's (NPROC)."""
        workdir = Path(workdir)
        log = workdir.parent / f'{log_name or workdir.name}.log'
        args = [
            sys.executable,
            '-m',
            'ghostnet_jax.train',
            f'--config={config}',
            f'--workdir={workdir}',
            *self.base_overrides(data),
            *overrides,
        ]
        workdir.parent.mkdir(parents=True, exist_ok=True)
        env = self.env(devices)
        if threads is not None:
            env['NPROC'] = str(threads)
        proc = forked_cli.start(args, env, REPO, log, cpus=one_core() if devices == 1 else None)
        run = Run(proc, workdir, log, args)
        self._runs.append(run)
        return run

    def cli(
        self, args: list, devices: int = 1, timeout: float = 300, cwd: Path = REPO
    ) -> subprocess.CompletedProcess:
        """subprocess.run([python, *args], capture_output=True, text=True) in this
        trainer's environment, started by forked_cli."""
        return forked_cli.run(
            [sys.executable, *map(str, args)], self.env(devices), cwd, self.root / 'output', timeout
        )

    def run(self, workdir: Path, *overrides: str, timeout: float = 600, **kwargs) -> Run:
        return self.start(workdir, *overrides, **kwargs).wait(timeout)


def distributed_runs(
    t: Trainer, workdir: Path, *overrides: str, log_prefix: str = 'process', port: int | None = None
) -> list[Run]:
    """The two processes of a jax.distributed run of the reference config in `workdir`
    (one CPU device each), started."""
    port = port or free_port()
    return [
        t.start(
            workdir,
            '--config.distributed.enabled=True',
            f'--config.distributed.coordinator_address=127.0.0.1:{port}',
            '--config.distributed.num_processes=2',
            f'--config.distributed.process_id={i}',
            *overrides,
            devices=1,
            log_name=f'{log_prefix}{i}',
        )
        for i in range(2)
    ]


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

    return {
        jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def assert_trees_equal(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), f'{what}: different leaves {set(a) ^ set(b)}'
    differ = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not differ, f'{what}: {len(differ)} of {len(a)} arrays differ, e.g. {differ[:5]}'


def assert_trees_close(a: dict, b: dict, what: str, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys(), f'{what}: different leaves {set(a) ^ set(b)}'
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=f'{what}: {k}')
