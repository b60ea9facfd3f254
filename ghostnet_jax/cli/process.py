"""What a training-type command sets up before JAX starts: a caching memory allocator for
XLA:CPU.

XLA:CPU allocates and frees each train step's large buffers through malloc. glibc maps
every such block afresh and unmaps it on free, so the kernel faults in and zeroes a
step's whole working set again each step; a caching allocator keeps the memory. Measured
alternated, process by process (docs/performance.md#cpu-memory-allocator): a real CPU epoch
ran about twice as fast with one as with glibc's malloc, with a fraction of the system time.

So on a CPU-only Linux host, a training command started without a preloaded allocator
restarts itself once with one in LD_PRELOAD, keeping its pid and every interpreter option
and argument (`sys.orig_argv`: `python -X ...`, `coverage run -m ...` and debuggers
survive): the system's tcmalloc where it is installed (Debian/Ubuntu: `apt-get install
libtcmalloc-minimal4`), else mimalloc from the `cmeel-mimalloc` wheel, which `pip install
ghostnet_jax` brings on Linux (nothing to compile, no sudo), told to keep the memory it
frees (MIMALLOC_PURGE_DELAY=-1), else a system jemalloc. Per real epoch, tcmalloc and
mimalloc measured equally fast on GhostNet-CIFAR 0.5x and tcmalloc 1.10x faster on 1.0x
(docs/performance.md). The restarted process removes the preload
from its environment again, so the processes it starts do not inherit it. Nothing happens
on hosts with an accelerator (JAX_PLATFORMS naming another platform first, or a
CUDA/ROCm/TPU plugin of JAX installed), where XLA:CPU does not run the steps.

GHOSTNET_JAX_ALLOCATOR chooses: `auto` (default, the order of AUTO_ORDER), `mimalloc`,
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
# The system's allocators, by file name.
LIBRARIES = {
    'tcmalloc': ('libtcmalloc_minimal.so.4', 'libtcmalloc.so.4'),
    'jemalloc': ('libjemalloc.so.2',),
}
# mimalloc as the cmeel-mimalloc wheel installs it (a core dependency on Linux).
MIMALLOC_WHEEL, MIMALLOC_FILE = 'cmeel-mimalloc', 'cmeel.prefix/lib/libmimalloc.so.3'
# `auto` takes the first one found (the alternated A/B in docs/performance.md).
AUTO_ORDER = ('tcmalloc', 'mimalloc', 'jemalloc')
# What each keeps instead of returning freed memory to the kernel, unless the user set it:
# jemalloc returns freed pages after 10 s by default and mimalloc after its purge delay,
# which are the costs we avoid; kept, they measured close to tcmalloc's default.
ALLOCATOR_ENV = {
    'jemalloc': {'MALLOC_CONF': 'dirty_decay_ms:-1,muzzy_decay_ms:-1'},
    'mimalloc': {'MIMALLOC_PURGE_DELAY': '-1'},
}
INSTALL_HINT = (
    "pip install cmeel-mimalloc (ghostnet_jax's Linux dependency), or "
    'sudo apt-get install libtcmalloc-minimal4 (Debian/Ubuntu)'
)
_ACCELERATOR_PLUGINS = ('jax-cuda', 'jax_cuda', 'jax-rocm', 'jax_rocm', 'libtpu', 'jax-tpu')


def search_dirs(environ: Mapping[str, str]) -> list[str]:
    """Where shared libraries of the system (and of an active conda environment) live."""
    dirs = [os.path.join(environ['CONDA_PREFIX'], 'lib')] if environ.get('CONDA_PREFIX') else []
    dirs += [os.path.join(sys.prefix, 'lib')]
    dirs += sorted(glob.glob('/usr/lib/*-linux-gnu')) + sorted(glob.glob('/lib/*-linux-gnu'))
    return dirs + ['/usr/lib64', '/usr/lib', '/usr/local/lib', '/lib64', '/lib']


def wheel_mimalloc() -> str | None:
    """The path of the mimalloc library the cmeel-mimalloc wheel installed, or None."""
    try:
        path = importlib.metadata.distribution(MIMALLOC_WHEEL).locate_file(MIMALLOC_FILE)
    except importlib.metadata.PackageNotFoundError:
        return None
    return str(path) if os.path.isfile(path) else None


def find_library(choice: str, dirs: Sequence[str]) -> tuple[str, str] | None:
    """(name, path) of the allocator `choice` means ('auto', a name or a path), or None."""
    if os.sep in choice:
        return ('custom', choice) if os.path.isfile(choice) else None
    for name in AUTO_ORDER if choice == 'auto' else [choice]:
        if name == 'mimalloc':
            path = wheel_mimalloc()
            if path:
                return name, path
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


def plan(
    environ: Mapping[str, str], system: str, dirs: Sequence[str]
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
    if choice not in ('auto', *AUTO_ORDER) and os.sep not in choice:
        return None, (
            f"glibc's malloc: {OPT}={choice!r} names no allocator; use auto, "
            f'{", ".join(AUTO_ORDER)}, a library path or off'
        )
    accelerator = accelerator_host(environ)
    if accelerator:
        return None, f'the system allocator (an accelerator host: {accelerator})'
    found = find_library(choice, dirs)
    if found is None:
        what = ' or '.join(AUTO_ORDER) if choice == 'auto' else choice
        return None, (
            f"glibc's malloc: no {what} found. CPU training runs about twice as "
            f'fast with one: {INSTALL_HINT}'
        )
    name, path = found
    env = dict(environ)
    env['LD_PRELOAD'] = ':'.join(p for p in (path, preload) if p)
    env[_ORIGINAL_PRELOAD] = preload
    for variable, value in ALLOCATOR_ENV.get(name, {}).items():
        env.setdefault(variable, value)
    return env, f'{name} ({path})'


# What this process runs with, for the log line and results.json (see `settings`).
_STATE: dict[str, str] = {}


def prepare_process() -> None:
    """Call first thing in a training-type command's `__main__` block. May restart the
    process (os.execve, same pid); returns when the process is set up."""
    env = os.environ
    if env.get(_RESTARTED) == str(os.getpid()):  # this is the restarted process
        path = loaded_allocator()
        library = env.get('LD_PRELOAD', '').split(':')[0]
        _STATE['allocator'] = (
            f'{Path(library).name} ({library}), preloaded'
            if path
            else f"glibc's malloc: {library} was preloaded but is not mapped"
        )
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
    hint = '' if OPT in why else f' ({OPT}=off|{"|".join(AUTO_ORDER)}|PATH chooses)'
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
    handler.setFormatter(
        logging.Formatter(
            '%(levelname).1s%(asctime)s %(module)s] %(message)s', datefmt='%m%d %H:%M:%S'
        )
    )
    handler.addFilter(_QuietLibraries())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger('ghostnet_jax').info(describe())
