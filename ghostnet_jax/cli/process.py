"""What a training-type command sets up before JAX starts: a caching memory allocator from
the operating system for XLA:CPU.

XLA:CPU allocates and frees each train step's large buffers through malloc. glibc maps
every such block afresh and unmaps it on free, so the kernel faults in and zeroes a
step's whole working set again each step; tcmalloc and jemalloc keep the memory. Measured
alternated, process by process (docs/performance.md): a real CPU epoch of GhostNet-CIFAR
0.5x ran faster with tcmalloc than with glibc's malloc, with a fraction of the system time.

So on a CPU-only Linux host, a training command started without a preloaded allocator
finds the system's tcmalloc (Debian/Ubuntu: `apt-get install libtcmalloc-minimal4`; conda:
`gperftools`) and restarts itself once with it in LD_PRELOAD, keeping its pid and every
interpreter option and argument (`sys.orig_argv`: `python -X ...`, `coverage run -m ...`
and debuggers survive). The restarted process removes the preload from its environment
again, so the processes it starts do not inherit it. Nothing is compiled, and nothing
happens on hosts with an accelerator (JAX_PLATFORMS naming another platform first, or a
CUDA/ROCm/TPU plugin of JAX installed), where XLA:CPU does not run the steps.

GHOSTNET_JAX_ALLOCATOR chooses: `auto` (default: tcmalloc, else jemalloc, else glibc),
`tcmalloc`, `jemalloc`, a path to a shared library, or `off` (glibc's malloc, no restart).
"""
from __future__ import annotations

import glob
import importlib.metadata
import logging
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

from ghostnet_jax.cli.errors import verbose
from ghostnet_jax.training.environment import loaded_allocator

OPT = 'GHOSTNET_JAX_ALLOCATOR'
# Set in the restarted process: the pid that restarted (exec keeps it) and the LD_PRELOAD
# it had before, which the restarted process puts back for its children.
_RESTARTED = 'GHOSTNET_JAX_ALLOCATOR_RESTARTED'
_ORIGINAL_PRELOAD = 'GHOSTNET_JAX_ALLOCATOR_ORIGINAL_LD_PRELOAD'
# Preference order of `auto`: tcmalloc won the alternated A/B (docs/performance.md).
LIBRARIES = {
    'tcmalloc': ('libtcmalloc_minimal.so.4', 'libtcmalloc.so.4'),
    'jemalloc': ('libjemalloc.so.2',),
}
# jemalloc returns freed pages to the kernel after 10 s by default, which is the cost we
# avoid; without decay it measured as fast as tcmalloc's default (docs/performance.md).
JEMALLOC_CONF = 'dirty_decay_ms:-1,muzzy_decay_ms:-1'
INSTALL_HINT = ('sudo apt-get install libtcmalloc-minimal4 (Debian/Ubuntu), '
                'conda install -c conda-forge gperftools (conda)')
_ACCELERATOR_PLUGINS = ('jax-cuda', 'jax_cuda', 'jax-rocm', 'jax_rocm', 'libtpu', 'jax-tpu')


def search_dirs(environ: Mapping[str, str]) -> list[str]:
    """Where shared libraries of the system (and of an active conda environment) live."""
    dirs = [os.path.join(environ['CONDA_PREFIX'], 'lib')] if environ.get('CONDA_PREFIX') else []
    dirs += [os.path.join(sys.prefix, 'lib')]
    dirs += sorted(glob.glob('/usr/lib/*-linux-gnu')) + sorted(glob.glob('/lib/*-linux-gnu'))
    return dirs + ['/usr/lib64', '/usr/lib', '/usr/local/lib', '/lib64', '/lib']


def find_library(choice: str, dirs: Sequence[str]) -> tuple[str, str] | None:
    """(name, path) of the allocator `choice` means ('auto', a name or a path), or None."""
    if os.sep in choice:
        return ('custom', choice) if os.path.isfile(choice) else None
    names = list(LIBRARIES) if choice == 'auto' else [choice]
    for name in names:
        for filename in LIBRARIES.get(name, ()):
            for folder in dirs:
                path = os.path.join(folder, filename)
                if os.path.isfile(path):
                    return name, path
    return None


def accelerator_host(environ: Mapping[str, str]) -> str | None:
    """Why this host's JAX would not compute on the CPU, or None. Decided without
    starting JAX (a preload must be set before the process starts)."""
    platforms = environ.get('JAX_PLATFORMS', '').strip()
    if platforms:
        first = platforms.split(',')[0].strip()
        return None if first == 'cpu' else f'JAX_PLATFORMS={platforms}'
    for dist in importlib.metadata.distributions():
        name = (dist.metadata['Name'] or '').lower()
        if name.startswith(_ACCELERATOR_PLUGINS):
            return f'{name} is installed'
    return None


def plan(environ: Mapping[str, str], system: str, dirs: Sequence[str]
         ) -> tuple[dict[str, str] | None, str]:
    """(the environment to restart with, or None to go on as is; why), for a process
    started with `environ` on `system` (sys.platform)."""
    choice = environ.get(OPT, 'auto').strip() or 'auto'
    if choice.lower() in ('off', '0', 'false', 'no', 'glibc'):
        return None, f"glibc's malloc ({OPT}={choice})"
    if system != 'linux':
        return None, f'the system allocator (preloading is set up on Linux only, not {system})'
    preload = environ.get('LD_PRELOAD', '')
    if 'malloc' in preload:
        return None, f'{preload} (from LD_PRELOAD)'
    if choice not in ('auto', *LIBRARIES) and os.sep not in choice:
        return None, (f"glibc's malloc: {OPT}={choice!r} names no allocator; use auto, "
                      f'{", ".join(LIBRARIES)}, a library path or off')
    accelerator = accelerator_host(environ)
    if accelerator:
        return None, f'the system allocator (an accelerator host: {accelerator})'
    found = find_library(choice, dirs)
    if found is None:
        what = 'tcmalloc or jemalloc' if choice == 'auto' else choice
        return None, (f"glibc's malloc: no {what} found. CPU training runs faster with one: "
                      f'{INSTALL_HINT}')
    name, path = found
    env = dict(environ)
    env['LD_PRELOAD'] = ':'.join(p for p in (path, preload) if p)
    env[_ORIGINAL_PRELOAD] = preload
    if name == 'jemalloc' and 'MALLOC_CONF' not in env:
        env['MALLOC_CONF'] = JEMALLOC_CONF
    return env, f'{name} ({path})'


# What this process runs with, for the log line and results.json (see `settings`).
_STATE: dict[str, str] = {}


def prepare_process() -> None:
    """Call first thing in a training-type command's `__main__` block. May restart the
    process (os.execve, same pid); returns when the process is set up."""
    env = os.environ
    if env.get(_RESTARTED) == str(os.getpid()):   # this is the restarted process
        path = loaded_allocator()
        library = env.get('LD_PRELOAD', '').split(':')[0]
        _STATE['allocator'] = (f'{Path(library).name} ({library}), preloaded' if path else
                               f"glibc's malloc: {library} was preloaded but is not mapped")
        original = env.pop(_ORIGINAL_PRELOAD, '')
        env.pop(_RESTARTED, None)
        if original:
            env['LD_PRELOAD'] = original
        else:
            env.pop('LD_PRELOAD', None)
        return
    new_env, why = plan(env, sys.platform, search_dirs(env))
    if new_env is None:
        _STATE['allocator'] = why
        return
    new_env[_RESTARTED] = str(os.getpid())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), new_env)


def describe() -> str:
    """The one log line a command prints about its allocator."""
    why = _STATE.get('allocator') or loaded_allocator() or "glibc's malloc"
    hint = '' if OPT in why else f' ({OPT}=off|tcmalloc|jemalloc|PATH chooses)'
    return f'Memory allocator: {why}{hint}'


class _QuietLibraries(logging.Filter):
    """Orbax and JAX log every save/restore step at INFO; keep their warnings and errors,
    one line each: a failure that matters reaches the command as an exception and is told
    there (with a traceback under --verbose); a background save that failed is reported
    by the checkpointer, which handles it."""

    def filter(self, record: logging.LogRecord) -> bool:
        noisy = any(part in record.pathname for part in ('/orbax/', '/jax/', '/jaxlib/'))
        if noisy and record.exc_info and not verbose(sys.argv):
            record.exc_info, record.exc_text = None, None
        return record.levelno >= logging.WARNING or not noisy


def setup_logging(level: int = logging.INFO) -> None:
    """One log line per message on stderr (level, time, module), the libraries' INFO
    chatter filtered out, and the allocator line first."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('%(levelname).1s%(asctime)s %(module)s] %(message)s',
                                           datefmt='%m%d %H:%M:%S'))
    handler.addFilter(_QuietLibraries())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger('ghostnet_jax').info(describe())
