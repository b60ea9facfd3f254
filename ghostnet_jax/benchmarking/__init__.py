"""Measuring this project's speed: train step, evaluation, a real epoch (the trainer's own
loop), compile time, a profile by op category, and an optional PyTorch/timm peer measured
in the same run. `python -m ghostnet_jax.benchmark` is the command line over
`run_benchmark`."""

from typing import Any

__all__ = ['BenchmarkResult', 'run_benchmark']


def __getattr__(name: str) -> Any:
    if name in __all__:  # JAX-heavy: imported on first use
        from ghostnet_jax.benchmarking import measure

        return getattr(measure, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
