"""Measuring this project's speed: train step, evaluation, a real epoch, compile time,
a profile by op category, and an optional PyTorch/timm peer measured in the same run.

`python -m ghostnet_jax.benchmark` is the command line over these functions.
"""
from ghostnet_jax.benchmarking.environment import environment
from ghostnet_jax.benchmarking.measure import BenchmarkResult, run_benchmark

__all__ = ['BenchmarkResult', 'environment', 'run_benchmark']
