"""The command-line tools restart once with glibc's huge-page malloc tunable
(ghostnet_jax/malloc_huge_pages.py): when, and that the restarted process gets the same
arguments and the tunable, without losing tunables the user set."""
import os
import subprocess
import sys
import textwrap

import pytest

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
    from ghostnet_jax.malloc_huge_pages import use_malloc_huge_pages
    print('start', os.getpid(), os.environ.get('GLIBC_TUNABLES', '-'), sys.argv[1:], flush=True)
    use_malloc_huge_pages('probe_module')
    print('ran', os.getpid(), flush=True)
""")


@pytest.mark.skipif(not m.should_reexec(
    {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', m.OPT_OUT)},
    sys.platform, m._glibc_version(), m._thp_mode()),
    reason='needs Linux, glibc >= 2.35 and transparent huge pages')
@pytest.mark.parametrize('opt_out', [False, True])
def test_restart_keeps_pid_and_arguments(tmp_path, opt_out):
    (tmp_path / 'probe_module.py').write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', m.OPT_OUT)}
    env['PYTHONPATH'] = os.pathsep.join([str(tmp_path), os.getcwd()])
    if opt_out:
        env[m.OPT_OUT] = '0'
    out = subprocess.run([sys.executable, '-m', 'probe_module', '--a=1', 'b c'], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.splitlines()
    if opt_out:
        assert [l.split()[0] for l in lines] == ['start', 'ran']
        assert " - ['--a=1', 'b c']" in lines[0]
        return
    first, second, ran = lines
    pid = first.split()[1]
    assert first == f"start {pid} - ['--a=1', 'b c']"
    assert second == f"start {pid} glibc.malloc.hugetlb=1 ['--a=1', 'b c']"
    assert ran == f'ran {pid}'
