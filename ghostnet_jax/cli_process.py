"""What every training-type command does first, before JAX starts a backend: XLA's CPU
fast math (`xla_cpu_flags`), then the one-time restart with glibc's huge-page malloc
(`malloc_huge_pages`), which keeps the environment set here."""
from __future__ import annotations

from ghostnet_jax.malloc_huge_pages import use_malloc_huge_pages
from ghostnet_jax.xla_cpu_flags import use_xla_fast_math


def prepare_cli_process(module: str) -> None:
    """Call first thing in `python -m <module>`'s `__main__` block."""
    use_xla_fast_math()
    use_malloc_huge_pages(module)
