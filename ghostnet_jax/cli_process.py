"""What every training-type command does first, before JAX starts a backend: XLA's CPU
fast math (`xla_cpu_flags`), then one restart of the process with glibc's huge-page malloc
(`malloc_huge_pages`) and the large-block cache (`malloc_block_cache`), both of which
glibc and the dynamic loader read only when a process starts."""
from __future__ import annotations

import os
import sys
from typing import Mapping

from ghostnet_jax import malloc_block_cache, malloc_huge_pages
from ghostnet_jax.xla_cpu_flags import use_xla_fast_math


def restart_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to restart with, or None when the process needs no restart (set up
    already, opted out, or not Linux/glibc)."""
    env = dict(environ)
    glibc = malloc_huge_pages.running_glibc()
    if malloc_huge_pages.should_reexec(environ, sys.platform, glibc,
                                       malloc_huge_pages.kernel_thp_mode()):
        env = malloc_huge_pages.with_tunable(env)
    if malloc_block_cache.applies(environ, sys.platform, glibc):
        library = malloc_block_cache.built_library(malloc_block_cache.cache_folder(environ))
        if library is not None:
            env = malloc_block_cache.with_preload(env, library)
    return None if env == dict(environ) else env


def restart_with_fast_malloc(module: str) -> None:
    """Re-executes `python -m <module> <same arguments>` with `restart_environment`, where
    it applies; returns without doing anything otherwise. The process keeps its pid, so
    signals still reach it."""
    env = restart_environment(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, '-m', module, *sys.argv[1:]], env)


def prepare_cli_process(module: str) -> None:
    """Call first thing in `python -m <module>`'s `__main__` block."""
    use_xla_fast_math()
    restart_with_fast_malloc(module)
