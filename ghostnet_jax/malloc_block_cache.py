"""CPU training speed: keep XLA:CPU's per-step temporary block mapped between steps.

Even with huge pages (`malloc_huge_pages`), glibc maps every block above 32 MiB afresh and
unmaps it on free, so the kernel faults in and zeroes a train step's whole temporary block
(1.7 GB for GhostNet-CIFAR 0.5x, batch 128) every step. `malloc_block_cache.c` is a small
malloc front, loaded with LD_PRELOAD, that keeps such blocks and hands them out again:
a real epoch of that model ran 1.2-1.4x faster with it (README, Performance).

The library is compiled once per version of its source with the system C compiler (`cc`,
or $CC) into the user's cache folder; without a compiler, or off glibc, nothing changes.
The command-line tools add it when they restart themselves (`cli_process`).
Set GHOSTNET_JAX_MALLOC_BLOCK_CACHE=0 to leave malloc alone.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping

SOURCE = Path(__file__).with_suffix('.c')
OPT_OUT = 'GHOSTNET_JAX_MALLOC_BLOCK_CACHE'
_STATS_SYMBOL = 'ghostnet_jax_block_cache_stats'


def applies(environ: Mapping[str, str], system: str, glibc: tuple[int, ...]) -> bool:
    """Whether a tool started with `environ` should run with the library preloaded. Not
    next to another malloc the user preloads (jemalloc, tcmalloc, ...): one is enough."""
    return (system == 'linux' and bool(glibc) and environ.get(OPT_OUT, '1') != '0'
            and 'malloc' not in environ.get('LD_PRELOAD', ''))


def cache_folder(environ: Mapping[str, str]) -> Path:
    base = environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'ghostnet_jax'


def built_library(folder: Path, compiler: str | None = None) -> Path | None:
    """The compiled library in `folder`, built there first if needed; None when there is no
    C compiler or the build fails (the tools then run with glibc's malloc as it is)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    target = folder / f'malloc_block_cache-{digest}.so'
    if target.is_file():
        return target
    compiler = compiler or os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc')
    if not compiler:
        return None
    # A temporary name and an atomic rename: two tools starting at once never load half a file.
    partial = folder / f'{target.name}.{os.getpid()}.partial'
    try:
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([compiler, '-O2', '-shared', '-fPIC', '-o', str(partial),
                                 str(SOURCE), '-ldl'], capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            print(f'ghostnet_jax: could not build {SOURCE.name} with {compiler}, so CPU '
                  f'training runs without it (slower; README, Performance):\n'
                  f'{result.stderr.strip()[-2000:]}', file=sys.stderr)
            return None
        os.replace(partial, target)
    except (OSError, subprocess.SubprocessError) as error:
        print(f'ghostnet_jax: could not build {SOURCE.name} ({error}); CPU training runs '
              'without it (slower; README, Performance)', file=sys.stderr)
        return None
    finally:
        partial.unlink(missing_ok=True)
    return target


def with_preload(environ: Mapping[str, str], library: Path) -> dict[str, str]:
    """`environ` with `library` added to LD_PRELOAD (kept once; the user's entries stay)."""
    env = dict(environ)
    entries = env.get('LD_PRELOAD', '').replace(' ', ':').split(':')
    if str(library) not in entries:
        env['LD_PRELOAD'] = ':'.join(p for p in (*entries, str(library)) if p)
    return env


def stats() -> dict[str, int] | None:
    """This process's counts (hits: large requests served from a kept block; misses: ones
    that mapped a new block; blocks: mapped now; kept_bytes: free and kept), or None when
    the library is not loaded."""
    try:
        function = getattr(ctypes.CDLL(None), _STATS_SYMBOL)
    except AttributeError:
        return None
    values = [ctypes.c_ulong() for _ in range(4)]
    function(*(ctypes.byref(v) for v in values))
    return dict(zip(('hits', 'misses', 'blocks', 'kept_bytes'), (v.value for v in values)))


def main() -> int:
    """`LD_PRELOAD=$(python -m ghostnet_jax.malloc_block_cache) python your_script.py`: the
    cache for programs that use the package from Python rather than through its commands."""
    library = built_library(cache_folder(os.environ))
    if library is None:
        print('no C compiler found (cc, gcc or $CC): the block cache cannot be built',
              file=sys.stderr)
        return 1
    print(library)
    return 0


if __name__ == '__main__':
    sys.exit(main())
