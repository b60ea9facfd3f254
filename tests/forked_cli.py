"""Starts the suite's command-line runs (`python -m ghostnet_jax.X ...`, `python -c SCRIPT
...`) as forks of a server that has already imported JAX, Flax, Orbax and the package.

Each run is still a process of its own, as a user's would be: its own pid, signals
(SIGTERM, SIGKILL), exit code, stdout/stderr, working directory and environment, and its
own XLA backend, created after the fork from the run's XLA_FLAGS (device count). What it
skips is the ~1.3 CPU-s of imports that every one of the suite's ~80 runs would repeat
(a warm 24-step training run: 6.1-6.6 CPU-s as `python -m`, 4.8-5.1 as a fork of an
imported interpreter; 2-core AMD EPYC, 2026-12-07).

The server is multiprocessing's forkserver (standard library), started once with the
harness's environment. A run whose environment differs from the server's in anything but
the variables read after startup (FORK_SAFE_ENV) is started as a plain subprocess, as is
every run where the forkserver is unavailable or GHOSTNET_JAX_TEST_FORK=0.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

# Modules the server imports once; whatever a run imports beyond them it imports itself.
# Not the command modules themselves: runpy runs those as __main__, and warns when one is
# already imported (the library never imports a command).
PRELOAD = [
    'jax',
    'flax.linen',
    'optax',
    'orbax.checkpoint',
    'tensorboardX',
    'ghostnet_jax.cli.flags',
    'ghostnet_jax.cli.errors',
    'ghostnet_jax.cli.process',
    'ghostnet_jax.training.launch',
    'ghostnet_jax.training.trainer',
    'ghostnet_jax.study.sweep',
    'ghostnet_jax.study.sanity',
    'ghostnet_jax.study.lr_find',
    'ghostnet_jax.study.report',
    'ghostnet_jax.serving.loading',
    'forked_cli',
]
# Read by XLA when a run's backend starts (XLA_FLAGS; NPROC, its thread count) or by the
# package when a run reads its data, both after the fork, or read by nothing in a run
# (pytest's note of the current test); every other variable may be read at import, in the
# server.
FORK_SAFE_ENV = ('XLA_FLAGS', 'NPROC', 'GHOSTNET_JAX_CACHE', 'PYTEST_CURRENT_TEST')

# A plain subprocess's pin: set the affinity, then become the run.
_PIN_AND_EXEC = (
    'import os, sys; os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(",")}); '
    'os.execv(sys.argv[2], sys.argv[2:])'
)

_server_env: dict[str, str] | None = None
_context = None


def start_server(env: dict[str, str]) -> None:
    """Starts the forkserver with `env` (once; call from the main thread before any other
    thread starts processes: the server inherits os.environ, swapped for the call)."""
    global _server_env, _context
    if _context is not None or os.environ.get('GHOSTNET_JAX_TEST_FORK', '1') == '0':
        return
    if 'forkserver' not in multiprocessing.get_all_start_methods():
        return
    from multiprocessing import forkserver

    context = multiprocessing.get_context('forkserver')
    context.set_forkserver_preload(PRELOAD)
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        forkserver.ensure_running()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    _server_env, _context = dict(env), context


def _forkable(args: list[str], env: dict[str, str]) -> bool:
    if (
        _context is None
        or len(args) < 3
        or args[0] != sys.executable
        or args[1] not in ('-m', '-c')
    ):
        return False
    strip = lambda e: {k: v for k, v in e.items() if k not in FORK_SAFE_ENV}
    return strip(env) == strip(_server_env)


class Forked:
    """The part of subprocess.Popen's interface the harnesses use."""

    def __init__(self, process, args: list[str]):
        self._process, self.args = process, args
        self.pid = process.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start(
    args: list[str],
    env: dict[str, str],
    cwd: str | Path,
    stdout: str | Path,
    stderr: str | Path | None = None,
    cpus: set[int] | None = None,
):
    """Starts `args` ([sys.executable, '-m'|'-c', ...]) with its stdout written to the file
    `stdout` and its stderr to `stderr` (None: the same file); a Forked or a Popen.

    `cpus`: the CPUs the run may use, set in the new process before it runs anything, so
    before its XLA backend starts (which sizes its thread pool from them when NPROC is not
    set). Set from outside after the start, the pin would race the backend's start."""
    if not _forkable(args, env):
        out = open(stdout, 'w')
        err = subprocess.STDOUT if stderr is None else open(stderr, 'w')
        if cpus is not None:  # pinned, then exec'd: no preexec_fn fork in a threaded process
            args = [sys.executable, '-c', _PIN_AND_EXEC, ','.join(map(str, sorted(cpus))), *args]
        try:
            return subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=err)
        finally:
            out.close()
            if stderr is not None:
                err.close()
    process = _context.Process(
        target=_run_in_child,
        args=(args[1:], env, str(cwd), str(stdout), None if stderr is None else str(stderr), cpus),
    )
    process.start()
    return Forked(process, args)


def run(
    args: list[str],
    env: dict[str, str],
    cwd: str | Path,
    tmp: Path,
    timeout: float = 600,
    cpus: set[int] | None = None,
) -> subprocess.CompletedProcess:
    """subprocess.run(args, capture_output=True, text=True), started by start() (on `cpus`)."""
    tmp.mkdir(parents=True, exist_ok=True)
    stamp = f'{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}'
    out, err = tmp / f'run-{stamp}.out', tmp / f'run-{stamp}.err'
    proc = start(args, env, cwd, out, err, cpus)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(
            f'timed out after {timeout} s: {args}\n{err.read_text(errors="replace")[-4000:]}'
        )
    return subprocess.CompletedProcess(
        args, proc.returncode, out.read_text(errors='replace'), err.read_text(errors='replace')
    )


def _run_in_child(
    args: list[str],
    env: dict[str, str],
    cwd: str,
    stdout: str,
    stderr: str | None,
    cpus: set[int] | None = None,
) -> None:
    """In the forked child: become `python ARGS` (as the interpreter would run it) and exit
    with its exit code, after its non-daemon threads and atexit handlers, as Python does."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = out if stderr is None else os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdout = open(1, 'w', buffering=1, closefd=False, errors='backslashreplace')
    sys.stderr = open(2, 'w', buffering=1, closefd=False, errors='backslashreplace')
    sys.__stdout__, sys.__stderr__ = sys.stdout, sys.stderr
    mode, target, rest = args[0], args[1], args[2:]
    sys.orig_argv = [sys.executable, *args]
    sys.path[0] = cwd if mode == '-m' else ''
    code = 0
    try:
        if mode == '-m':
            sys.argv = [target, *rest]
            runpy.run_module(target, run_name='__main__', alter_sys=True)
        else:
            sys.argv = ['-c', *rest]
            exec(compile(target, '<string>', 'exec'), {'__name__': '__main__'})
    except SystemExit as e:
        code = e.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
