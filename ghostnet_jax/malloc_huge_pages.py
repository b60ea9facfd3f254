"""CPU training speed: glibc's malloc on transparent huge pages, set up before JAX starts.

XLA:CPU allocates and frees each step's buffers through malloc, and glibc serves large
blocks with fresh anonymous mappings that it unmaps on free. Every train step therefore
faults its working set back in 4 KiB at a time: a GhostNet-CIFAR 0.5x run on 2 cores
took ~530,000 minor page faults per step and spent 43% of its CPU time in the kernel.
glibc 2.35+ backs those mappings with 2 MiB transparent huge pages when the tunable
`glibc.malloc.hugetlb=1` is set, which cut the faults ~45x and made the same training
loop 1.6-1.9x faster (README, Performance). glibc reads tunables only when a process
starts, so the command-line tools re-execute themselves once with it set (`cli_process`).

Set GHOSTNET_JAX_MALLOC_HUGE_PAGES=0 to leave the tunable unset.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Mapping

TUNABLE = 'glibc.malloc.hugetlb=1'
OPT_OUT = 'GHOSTNET_JAX_MALLOC_HUGE_PAGES'
_THP_MODE = Path('/sys/kernel/mm/transparent_hugepage/enabled')


def running_glibc() -> tuple[int, ...]:
    name, version = platform.libc_ver()
    if name != 'glibc' or not version:
        return ()
    return tuple(int(p) for p in version.split('.')[:2] if p.isdigit())


def kernel_thp_mode() -> str:
    """The kernel's transparent-huge-page mode ('always', 'madvise' or 'never'), or ''."""
    try:
        text = _THP_MODE.read_text()
    except OSError:
        return ''
    start, end = text.find('['), text.find(']')
    return text[start + 1:end] if 0 <= start < end else ''


def should_reexec(environ: Mapping[str, str], system: str, glibc: tuple[int, ...],
                  thp_mode: str) -> bool:
    """Whether a tool started with `environ` should restart itself with the tunable."""
    return (system == 'linux' and glibc >= (2, 35) and thp_mode in ('always', 'madvise')
            and environ.get(OPT_OUT, '1') != '0'
            and 'glibc.malloc.hugetlb' not in environ.get('GLIBC_TUNABLES', ''))


def with_tunable(environ: Mapping[str, str]) -> dict[str, str]:
    env = dict(environ)
    env['GLIBC_TUNABLES'] = ':'.join(p for p in (env.get('GLIBC_TUNABLES'), TUNABLE) if p)
    return env
