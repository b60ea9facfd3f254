"""The training commands' CPU allocator (ghostnet_jax/cli/process.py): when they restart
with a system tcmalloc/jemalloc, and that the restart keeps the pid, the interpreter's
options and the arguments, and does not pass the preload on to child processes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import train_harness as h

from ghostnet_jax.cli import process as P


def _dirs_with(tmp_path: Path, *names: str) -> list[str]:
    for name in names:
        (tmp_path / name).write_bytes(b'')
    return [str(tmp_path)]


def test_auto_prefers_a_system_tcmalloc_then_the_wheels_mimalloc_then_jemalloc(
    tmp_path, monkeypatch
):
    both = _dirs_with(tmp_path, 'libtcmalloc_minimal.so.4', 'libjemalloc.so.2')
    wheel = str(tmp_path / 'libmimalloc.so.3')
    monkeypatch.setattr(P, 'wheel_mimalloc', lambda: wheel)
    assert P.find_library('auto', both) == ('tcmalloc', str(tmp_path / 'libtcmalloc_minimal.so.4'))
    assert P.find_library('auto', [str(tmp_path / 'no system libraries')]) == ('mimalloc', wheel)
    assert P.find_library('mimalloc', both) == ('mimalloc', wheel)
    monkeypatch.setattr(P, 'wheel_mimalloc', lambda: None)
    jemalloc_only = _dirs_with(tmp_path / '..', 'libjemalloc.so.2')
    assert P.find_library('auto', jemalloc_only)[0] == 'jemalloc'
    assert P.find_library('auto', [str(tmp_path / 'empty')]) is None


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='a Linux dependency')
def test_the_install_brings_mimalloc_and_auto_restarts_with_it_keeping_its_memory(tmp_path):
    """What a fresh machine gets from `pip install`: the wheel's library, which `auto` finds
    where the system has no allocator, preloaded with its purge delay off (freed memory
    kept for the next step)."""
    path = P.wheel_mimalloc()
    assert path and os.path.basename(path) == 'libmimalloc.so.3', path
    env, why = P.plan({'JAX_PLATFORMS': 'cpu'}, 'linux', [str(tmp_path / 'no system libraries')])
    assert env['LD_PRELOAD'] == path and env['MIMALLOC_PURGE_DELAY'] == '-1' and 'mimalloc' in why
    # A user's own setting wins.
    env, _ = P.plan({'JAX_PLATFORMS': 'cpu', 'MIMALLOC_PURGE_DELAY': '100'}, 'linux', [])
    assert env['MIMALLOC_PURGE_DELAY'] == '100'
    _, seen = _probe(tmp_path, **{P.OPT: 'mimalloc'})
    assert seen['loaded'] == path and 'mimalloc' in seen['line'], seen


def test_a_cpu_host_restarts_with_the_library_and_remembers_the_user_preload(tmp_path):
    dirs = _dirs_with(tmp_path, 'libtcmalloc_minimal.so.4')
    env, why = P.plan({'JAX_PLATFORMS': 'cpu', 'LD_PRELOAD': '/opt/mine.so'}, 'linux', dirs)
    library = str(tmp_path / 'libtcmalloc_minimal.so.4')
    assert env['LD_PRELOAD'] == f'{library}:/opt/mine.so' and library in why
    assert env[P._ORIGINAL_PRELOAD] == '/opt/mine.so'
    jemalloc = _dirs_with(tmp_path / '..', 'libjemalloc.so.2')
    env, _ = P.plan({'JAX_PLATFORMS': 'cpu', P.OPT: 'jemalloc'}, 'linux', jemalloc)
    assert (
        env['MALLOC_CONF'] == P.ALLOCATOR_ENV['jemalloc']['MALLOC_CONF']
    )  # no decay: memory stays


@pytest.mark.parametrize(
    'environ, system, needle',
    [
        (
            {P.OPT: 'off', 'JAX_PLATFORMS': 'cpu'},
            'linux',
            "glibc's malloc (GHOSTNET_JAX_ALLOCATOR=off)",
        ),
        ({'JAX_PLATFORMS': 'cuda'}, 'linux', 'accelerator host: JAX_PLATFORMS=cuda'),
        ({'JAX_PLATFORMS': 'tpu,cpu'}, 'linux', 'accelerator host'),
        (
            {'JAX_PLATFORMS': 'cpu', 'LD_PRELOAD': '/usr/lib/libjemalloc.so.2'},
            'linux',
            'from LD_PRELOAD',
        ),
        ({'JAX_PLATFORMS': 'cpu'}, 'darwin', 'Linux only'),
        ({'JAX_PLATFORMS': 'cpu', P.OPT: 'hoard'}, 'linux', 'names no allocator'),
    ],
)
def test_no_restart(tmp_path, environ, system, needle):
    dirs = _dirs_with(tmp_path, 'libtcmalloc_minimal.so.4')
    env, why = P.plan(environ, system, dirs)
    assert env is None and needle in why, why


def test_without_a_library_one_line_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(P, 'wheel_mimalloc', lambda: None)
    env, why = P.plan({'JAX_PLATFORMS': 'cpu'}, 'linux', [str(tmp_path)])
    assert env is None
    assert 'pip install cmeel-mimalloc' in why and 'apt-get install libtcmalloc-minimal4' in why


def test_an_accelerator_plugin_makes_a_host_an_accelerator_host(monkeypatch):
    class Dist:
        metadata = {'Name': 'jax-cuda12-plugin'}

    monkeypatch.setattr(P.importlib.metadata, 'distributions', lambda: [Dist()])
    assert P.accelerator_host({}) == 'jax-cuda12-plugin is installed'
    assert P.accelerator_host({'JAX_PLATFORMS': 'cpu'}) is None  # told to use the CPU


PROBE = """
import json, os, subprocess, sys
print('start', os.getpid(), flush=True)
from ghostnet_jax.cli.process import describe, prepare_process
from ghostnet_jax.training.environment import loaded_allocator
prepare_process()
child = subprocess.run([sys.executable, '-c', 'import os; print(os.environ.get("LD_PRELOAD"))'],
                       capture_output=True, text=True).stdout.strip()
print(json.dumps({'pid': os.getpid(), 'dev_mode': sys.flags.dev_mode, 'argv': sys.argv[1:],
                  'loaded': loaded_allocator(), 'child_preload': child, 'line': describe()}))
"""


def _probe(tmp_path, **env):
    full = dict(os.environ, PYTHONPATH=str(h.REPO), JAX_PLATFORMS='cpu')
    full.update(env)
    full.pop('LD_PRELOAD', None)
    out = subprocess.run(
        [sys.executable, '-X', 'dev', '-c', PROBE, 'a', '--b=1'],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    return [line for line in lines if line.startswith('start')], json.loads(lines[-1])


def _stand_in_library(tmp_path) -> Path:
    """A shared library that is safe to preload, named like an allocator (a copy of libm:
    its symbols are libm's own, so nothing in the process changes)."""
    libm = next(
        (
            p
            for p in (
                '/lib/x86_64-linux-gnu/libm.so.6',
                '/usr/lib/x86_64-linux-gnu/libm.so.6',
                '/lib/aarch64-linux-gnu/libm.so.6',
                '/lib64/libm.so.6',
            )
            if os.path.exists(p)
        ),
        None,
    )
    if libm is None or not sys.platform.startswith('linux'):
        pytest.skip('needs a Linux libm to stand in for an allocator')
    copy = tmp_path / 'libtcmalloc_standin.so'
    shutil.copy(libm, copy)
    return copy


def test_the_restart_keeps_pid_options_and_arguments_and_children_start_clean(tmp_path):
    library = _stand_in_library(tmp_path)
    starts, seen = _probe(tmp_path, **{P.OPT: str(library)})
    assert len(starts) == 2 and starts[0] == starts[1] == f'start {seen["pid"]}'  # one exec
    assert seen['dev_mode'] is True and seen['argv'] == ['a', '--b=1']  # python -X dev ... kept
    assert seen['loaded'] == str(library)
    assert seen['child_preload'] == 'None'  # the children do not inherit it
    assert 'libtcmalloc_standin.so' in seen['line'] and 'preloaded' in seen['line']


def test_opted_out_or_on_an_accelerator_host_nothing_restarts(tmp_path):
    library = _stand_in_library(tmp_path)
    for env, needle in (
        ({P.OPT: 'off'}, "glibc's malloc"),
        ({P.OPT: str(library), 'JAX_PLATFORMS': 'cuda'}, 'accelerator host'),
    ):
        starts, seen = _probe(tmp_path, **env)
        assert len(starts) == 1 and seen['loaded'] is None, seen
        assert needle in seen['line']
