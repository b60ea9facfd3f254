"""What a benchmark figure depends on besides the code: machine, versions, flags."""
from __future__ import annotations

import os
import platform
from importlib import metadata

import jax

from ghostnet_jax import malloc_block_cache

# CPU features that change which kernels XLA (and PyTorch) pick on x86.
_CPU_FLAGS_OF_INTEREST = ('avx', 'avx2', 'fma', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_bf16',
                          'avx512_vnni', 'amx_tile', 'amx_bf16')


def cpu_info(path: str = '/proc/cpuinfo') -> dict:
    """Model name and the SIMD flags of interest, from the first processor entry."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(path, encoding='utf-8') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'model name':
                    model = value.strip()
                elif key == 'flags':
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {'model': model, 'logical_cores': os.cpu_count(),
            'flags': [f for f in _CPU_FLAGS_OF_INTEREST if f in flags]}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Backend, devices, versions and the XLA/JAX settings in force in this process."""
    cache_dir = jax.config.jax_compilation_cache_dir
    return {
        'backend': jax.default_backend(),
        'device_count': jax.device_count(),
        'local_device_count': jax.local_device_count(),
        'device_kind': jax.devices()[0].device_kind,
        'process_count': jax.process_count(),
        'cpu': cpu_info(),
        'python': platform.python_version(),
        'versions': {p: _version(p) for p in ('jax', 'jaxlib', 'flax', 'optax', 'numpy')},
        'xla_flags': os.environ.get('XLA_FLAGS', ''),
        'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
        # None when the large-block malloc cache is not loaded (no C compiler, opted out).
        'malloc_block_cache': malloc_block_cache.stats(),
        'compilation_cache_dir': cache_dir or None,
    }
