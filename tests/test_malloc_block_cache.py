"""The large-block malloc cache (ghostnet_jax/malloc_block_cache.c and .py): when the tools
preload it, that it builds once, and what it promises inside a process: a freed large block
is handed out again (and only for a request close to its size), contents survive realloc,
alignment holds, calloc still zeroes, the kept memory stays bounded, threads do not corrupt
each other's blocks, and a JAX gradient is bit-identical with and without it."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from ghostnet_jax import cli_process
from ghostnet_jax import malloc_block_cache as cache

LINUX = dict(system='linux', glibc=(2, 36))
HAS_CC = bool(os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc'))
needs_cc = pytest.mark.skipif(not (HAS_CC and sys.platform == 'linux'),
                              reason='needs Linux/glibc and a C compiler')


def test_when_it_applies():
    assert cache.applies({}, **LINUX)
    assert cache.applies({'LD_PRELOAD': '/usr/lib/libfoo.so'}, **LINUX)
    assert not cache.applies({cache.OPT_OUT: '0'}, **LINUX)
    assert not cache.applies({}, **{**LINUX, 'system': 'darwin'})
    assert not cache.applies({}, **{**LINUX, 'glibc': ()})               # musl, or unknown
    # Another malloc preloaded by the user, or ours already (the restarted process).
    assert not cache.applies({'LD_PRELOAD': '/usr/lib/libjemalloc.so.2'}, **LINUX)
    assert not cache.applies({'LD_PRELOAD': '/c/malloc_block_cache-ab.so'}, **LINUX)


def test_preload_keeps_the_users_entries_once(tmp_path):
    library = tmp_path / 'lib.so'
    env = cache.with_preload({'LD_PRELOAD': '/a.so /b.so', 'X': '1'}, library)
    assert env == {'LD_PRELOAD': f'/a.so:/b.so:{library}', 'X': '1'}
    assert cache.with_preload(env, library) == env
    assert cache.with_preload({}, library) == {'LD_PRELOAD': str(library)}


def test_no_compiler_means_no_library(tmp_path, capsys):
    assert cache.built_library(tmp_path, compiler=str(tmp_path / 'no-such-cc')) is None
    assert 'could not build malloc_block_cache.c' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []                 # no partial file left behind


@needs_cc
def test_built_once_per_source(tmp_path):
    first = cache.built_library(tmp_path)
    assert first is not None and first.parent == tmp_path
    stamp = first.stat().st_mtime_ns
    # A second call finds it without a compiler.
    assert cache.built_library(tmp_path, compiler=str(tmp_path / 'no-such-cc')) == first
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


@needs_cc
def test_module_prints_the_library_for_python_programs(tmp_path):
    env = {**os.environ, 'XDG_CACHE_HOME': str(tmp_path)}
    out = subprocess.run([sys.executable, '-m', 'ghostnet_jax.malloc_block_cache'], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    library = out.strip()
    assert library.startswith(str(tmp_path / 'ghostnet_jax')) and os.path.isfile(library)


@needs_cc
def test_restart_environment_preloads_it_once(tmp_path):
    base = {k: v for k, v in os.environ.items()
            if k not in ('LD_PRELOAD', cache.OPT_OUT, 'GLIBC_TUNABLES')}
    base['XDG_CACHE_HOME'] = str(tmp_path)
    env = cli_process.restart_environment(base)
    assert env is not None
    preloaded = env['LD_PRELOAD'].split(':')
    assert len(preloaded) == 1 and preloaded[0].startswith(str(tmp_path / 'ghostnet_jax'))
    assert cli_process.restart_environment(env) is None    # the restarted process stays
    assert 'LD_PRELOAD' not in (cli_process.restart_environment({**base, cache.OPT_OUT: '0'})
                                or {})


PROBE = textwrap.dedent("""
    import ctypes, threading
    from ghostnet_jax import malloc_block_cache as cache
    MB = 1 << 20
    libc = ctypes.CDLL(None)
    libc.malloc.restype = libc.realloc.restype = libc.calloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.malloc_usable_size.argtypes = [ctypes.c_void_p]
    libc.malloc_usable_size.restype = ctypes.c_size_t

    before = cache.stats()        # Python's own start-up may have used the cache already
    a = libc.malloc(8 * MB)
    ctypes.memset(a, 7, 8 * MB)
    libc.free(a)
    b = libc.malloc(8 * MB - 100)
    assert b == a, 'a freed block of the same size is handed out again'
    assert libc.malloc_usable_size(b) >= 8 * MB
    after = cache.stats()
    assert (after['hits'] - before['hits'], after['misses'] - before['misses']) == (1, 1)
    c = libc.malloc(8 * MB)
    assert c != b, 'a block in use is never handed out twice'
    libc.free(b)
    d = libc.malloc(4 * MB)
    assert d not in (b, c), 'a kept block is not wasted on a much smaller request'

    e = libc.malloc(3 * MB)
    ctypes.memset(e, 42, 3 * MB)
    e2 = libc.realloc(e, 20 * MB)
    assert ctypes.string_at(e2, 3 * MB) == bytes([42]) * (3 * MB)
    small = libc.realloc(e2, 100)                 # below the threshold: back to glibc
    assert ctypes.string_at(small, 100) == bytes([42]) * 100
    libc.free(small)

    p = ctypes.c_void_p()
    assert libc.posix_memalign(ctypes.byref(p), 4096, 5 * MB) == 0
    assert p.value % 4096 == 0
    libc.free(p)

    libc.free(c)
    z = libc.calloc(8, MB)                       # glibc's calloc: zeroed even now
    assert ctypes.string_at(z, 8 * MB) == bytes(8 * MB)
    libc.free(z)
    tiny = libc.malloc(100)                       # below the threshold: glibc's
    libc.free(tiny)
    libc.free(d)

    # Many sizes freed in turn: what stays kept is bounded by twice the largest block.
    for size in range(2, 41, 2):
        libc.free(libc.malloc(size * MB))
    s = cache.stats()
    assert s['kept_bytes'] <= 2 * 40 * MB, s

    errors = []
    def worker(tag):
        for i in range(200):
            n = (1 + (i + tag) % 6) * MB
            q = libc.malloc(n)
            ctypes.memset(q, tag, n)
            if ctypes.string_at(q, n) != bytes([tag]) * n:
                errors.append(tag)
            libc.free(q)
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(1, 5)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors

    print('stats', cache.stats())
""")


def _run(library, script, tmp_path, *args):
    """`script` in a fresh Python, with `library` preloaded (None: without it)."""
    env = {**os.environ, 'GHOSTNET_JAX_MALLOC_BLOCK_CACHE_MIN_MB': '1',
           'PYTHONPATH': os.pathsep.join([os.getcwd(), os.environ.get('PYTHONPATH', '')])}
    env.pop('LD_PRELOAD', None)
    if library is not None:
        env['LD_PRELOAD'] = str(library)
    (tmp_path / 'probe.py').write_text(script)
    result = subprocess.run([sys.executable, str(tmp_path / 'probe.py'), *map(str, args)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@needs_cc
def test_what_it_promises_inside_a_process(tmp_path):
    library = cache.built_library(tmp_path / 'lib')
    assert 'stats {' in _run(library, PROBE, tmp_path)


JAX_PROBE = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from ghostnet_jax import malloc_block_cache as cache
    def loss(w, x):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                         dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
        return jnp.mean(jnp.tanh(y) ** 2)
    grad = jax.jit(jax.grad(loss))
    x = jax.random.normal(jax.random.key(0), (64, 32, 32, 16))
    w = jax.random.normal(jax.random.key(1), (3, 3, 16, 32)) * 0.1
    for _ in range(3):
        g = np.asarray(grad(w, x))
    np.save(sys.argv[1], g)
    print('stats', cache.stats())
""")


@needs_cc
def test_jax_results_are_bit_identical(tmp_path):
    import numpy as np
    library = cache.built_library(tmp_path / 'lib')
    with_cache = _run(library, JAX_PROBE, tmp_path, tmp_path / 'with.npy')
    assert 'stats {' in with_cache and "'hits': 0," not in with_cache, with_cache
    without = _run(None, JAX_PROBE, tmp_path, tmp_path / 'without.npy')
    assert 'stats None' in without
    np.testing.assert_array_equal(np.load(tmp_path / 'with.npy'),
                                  np.load(tmp_path / 'without.npy'))
