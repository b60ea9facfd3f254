"""What a run's or a benchmark's figures depend on besides the code: machine, versions,
the allocator and XLA flags in force. Recorded in results.json and the benchmark's JSON.

Nothing here imports JAX at module level: the commands read `loaded_allocator` before
JAX may start (ghostnet_jax/cli/process.py).
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# CPU features that change which kernels XLA (and PyTorch) pick on x86.
_CPU_FLAGS_OF_INTEREST = (
    'avx',
    'avx2',
    'fma',
    'avx512f',
    'avx512bw',
    'avx512vl',
    'avx512_bf16',
    'avx512_vnni',
    'amx_tile',
    'amx_bf16',
)
_ALLOCATORS = ('tcmalloc', 'jemalloc', 'mimalloc')


def cpu_info(path: str = '/proc/cpuinfo') -> dict:
    """Model name, family/model numbers and the SIMD flags of interest, from the first
    processor entry."""
    model, flags, family, number = platform.processor() or platform.machine(), set(), None, None
    try:
        with open(path, encoding='utf-8') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'model name':
                    model = value.strip()
                elif key == 'cpu family':
                    family = value.strip()
                elif key == 'model':
                    number = value.strip()
                elif key == 'flags':
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {
        'model': model,
        'family': family,
        'model_number': number,
        'logical_cores': os.cpu_count(),
        'flags': [f for f in _CPU_FLAGS_OF_INTEREST if f in flags],
    }


def loaded_allocator(maps: str = '/proc/self/maps') -> str | None:
    """The path of the tcmalloc/jemalloc/mimalloc library mapped into this process, or
    None (glibc's malloc, or a system without /proc)."""
    try:
        text = Path(maps).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and any(a in os.path.basename(fields[-1]) for a in _ALLOCATORS):
            return fields[-1]
    return None


def xla_cpu_threads() -> int:
    """The threads XLA:CPU computes with in this process. Its intra-op pool is sized once,
    when the backend starts: PJRT_NPROC or NPROC if set, else the CPUs this process may use
    at that moment (its affinity: taskset, a container's cpuset), and at least one per
    local device. The pool's threads are counted where Linux lists them (exact, even if the
    affinity changed since the start); elsewhere the same rule is applied."""
    try:
        names = [
            Path(f'/proc/self/task/{t}/comm').read_text().strip()
            for t in os.listdir('/proc/self/task')
        ]
    except OSError:
        names = []
    pool = sum(name.endswith('XLAEigen') for name in names)
    if pool:
        return pool
    import jax

    for variable in ('PJRT_NPROC', 'NPROC'):
        if os.environ.get(variable, '').strip().isdigit():
            return max(int(os.environ[variable]), jax.local_device_count())
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return max(cpus or 1, jax.local_device_count())


def compute_setup() -> dict:
    """What a run's bits depend on besides its config and code (docs/reliability.md,
    determinism): the backend, the device count and, on the CPU, XLA's thread count.
    Starts JAX's backend if it has not started."""
    import jax

    backend = jax.default_backend()
    return {
        'backend': backend,
        'devices': jax.device_count(),
        'xla_cpu_threads': xla_cpu_threads() if backend == 'cpu' else None,
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Backend, devices, versions, allocator and the XLA/JAX settings in force in this
    process (starts JAX's backend if it has not started)."""
    import jax

    cache_dir = jax.config.jax_compilation_cache_dir
    return {
        'backend': jax.default_backend(),
        'device_count': jax.device_count(),
        'local_device_count': jax.local_device_count(),
        'device_kind': jax.devices()[0].device_kind,
        'process_count': jax.process_count(),
        'xla_cpu_threads': xla_cpu_threads() if jax.default_backend() == 'cpu' else None,
        'cpu': cpu_info(),
        'python': platform.python_version(),
        'versions': {p: _version(p) for p in ('jax', 'jaxlib', 'flax', 'optax', 'numpy')},
        'allocator': loaded_allocator() or "glibc's malloc",
        'xla_flags': os.environ.get('XLA_FLAGS', ''),
        'compilation_cache_dir': cache_dir or None,
    }
