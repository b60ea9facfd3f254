"""The command-line tools restart once with glibc's huge-page malloc tunable
(ghostnet_jax/malloc_huge_pages.py) and the large-block cache (cli_process.py): when, and
that the restarted process gets the same arguments and both, without losing tunables the
user set."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from ghostnet_jax import malloc_block_cache as cache
from ghostnet_jax import malloc_huge_pages as m

LINUX = dict(system='linux', glibc=(2, 36), thp_mode='madvise')


def test_when_to_restart():
    assert m.should_reexec({}, **LINUX)
    assert m.should_reexec({}, **{**LINUX, 'thp_mode': 'always'})
    assert not m.should_reexec({}, **{**LINUX, 'thp_mode': 'never'})
    assert not m.should_reexec({}, **{**LINUX, 'glibc': (2, 31)})     # no such tunable yet
    assert not m.should_reexec({}, **{**LINUX, 'glibc': ()})          # musl, or unknown
    assert not m.should_reexec({}, **{**LINUX, 'system': 'darwin'})
    assert not m.should_reexec({m.OPT_OUT: '0'}, **LINUX)
    # Already restarted (or the user chose a value): never loop.
    assert not m.should_reexec({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, **LINUX)


def test_user_tunables_are_kept():
    env = m.with_tunable({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2', 'X': '1'})
    assert env['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'
    assert env['X'] == '1'
    assert m.with_tunable({})['GLIBC_TUNABLES'] == 'glibc.malloc.hugetlb=1'


PROBE = textwrap.dedent("""
    import os, sys
    from ghostnet_jax import malloc_block_cache
    from ghostnet_jax.cli_process import restart_with_fast_malloc
    cached = 'cache' if malloc_block_cache.stats() is not None else '-'
    print('start', os.getpid(), os.environ.get('GLIBC_TUNABLES', '-'), cached, sys.argv[1:],
          flush=True)
    restart_with_fast_malloc('probe_module')
    print('ran', os.getpid(), flush=True)
""")
HAS_CC = bool(os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc'))


@pytest.mark.skipif(not m.should_reexec(
    {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', m.OPT_OUT)},
    sys.platform, m.running_glibc(), m.kernel_thp_mode()),
    reason='needs Linux, glibc >= 2.35 and transparent huge pages')
@pytest.mark.parametrize('huge_pages', [True, False])
@pytest.mark.parametrize('block_cache', [True, False])
def test_restart_keeps_pid_and_arguments(tmp_path, huge_pages, block_cache):
    """One restart at most, with what was not opted out (the block cache only where a C
    compiler builds it), the same pid and the same arguments."""
    (tmp_path / 'probe_module.py').write_text(PROBE)
    env = {k: v for k, v in os.environ.items()
           if k not in ('GLIBC_TUNABLES', 'LD_PRELOAD', m.OPT_OUT, cache.OPT_OUT)}
    env['PYTHONPATH'] = os.pathsep.join([str(tmp_path), os.getcwd()])
    env['XDG_CACHE_HOME'] = str(tmp_path / 'cache')
    if not huge_pages:
        env[m.OPT_OUT] = '0'
    if not block_cache:
        env[cache.OPT_OUT] = '0'
    out = subprocess.run([sys.executable, '-m', 'probe_module', '--a=1', 'b c'], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.splitlines()
    pid = lines[0].split()[1]
    assert lines[0] == f"start {pid} - - ['--a=1', 'b c']"
    assert lines[-1] == f'ran {pid}'
    expect_cache = block_cache and HAS_CC
    if not (huge_pages or expect_cache):
        assert len(lines) == 2
        return
    tunables = 'glibc.malloc.hugetlb=1' if huge_pages else '-'
    assert lines[1:-1] == [
        f"start {pid} {tunables} {'cache' if expect_cache else '-'} ['--a=1', 'b c']"]
