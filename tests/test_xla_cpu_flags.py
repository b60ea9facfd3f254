"""The command-line tools switch on XLA's CPU fast math (ghostnet_jax/xla_cpu_flags.py):
when, without overriding a user's choice, and that the installed jaxlib accepts the flag
(XLA aborts the process on an unknown flag, so a renamed flag would break every tool)."""
import json
import os
import subprocess
import sys

from ghostnet_jax import xla_cpu_flags as f


def test_flag_is_added_once_and_user_choices_win():
    assert f.with_fast_math({}) == f.FLAG
    assert f.with_fast_math({'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}) == (
        f'--xla_force_host_platform_device_count=8 {f.FLAG}')
    assert f.with_fast_math({'XLA_FLAGS': f.FLAG}) == f.FLAG
    chosen = {'XLA_FLAGS': '--xla_cpu_enable_fast_math=false'}
    assert f.with_fast_math(chosen) == chosen['XLA_FLAGS']
    assert f.with_fast_math({f.OPT_OUT: '0', 'XLA_FLAGS': '--a=1'}) == '--a=1'
    assert f.with_fast_math({f.OPT_OUT: '0'}) == ''


def test_benchmark_cli_runs_with_the_flag_and_records_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', f.OPT_OUT)}
    out = tmp_path / 'bench.json'
    subprocess.run(
        [sys.executable, '-m', 'ghostnet_jax.benchmark', '--model', 'ghostnet_cifar_tiny',
         '--batch-size', '4', '--image-size', '16', '--steps', '1', '--epoch-steps', '0',
         '--eval-batches', '0', '--json', str(out)],
        env=dict(env, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_backend_optimization_level=0'),
        check=True, capture_output=True, timeout=600)
    assert f.FLAG in json.loads(out.read_text())['xla_flags'].split()
