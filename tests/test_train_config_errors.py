"""Bad configs stop the CLI before training, with a message naming the field and the fix;
`init_from` fine-tunes from another run's workdir with another number of classes."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import train_harness as h

from ghostnet_jax.training.checkpoints import load_variables

INIT_FROM_SCRIPT = """
import sys, numpy as np, jax
from ghostnet_jax.configs import smoke
from ghostnet_jax.training.experiment import build_experiment
from ghostnet_jax.training.parallel import make_mesh
data, cache, base, out_path = sys.argv[1:]
config = smoke.get_config()
config.data.source = 'folder:' + data
config.data.cache_dir = cache
config.model.conv_impl = 'native'
out = {}
for name, init_from in (('fresh', None), ('tuned', base)):
    config.init_from = init_from
    state = build_experiment(config, make_mesh()).state
    tree = {'params': state.params, 'batch_stats': state.batch_stats}
    for p, v in jax.tree_util.tree_leaves_with_path(tree):
        out[name + jax.tree_util.keystr(p)] = np.asarray(v)
np.savez(out_path, **out)
"""


@h.job('init_from', after='base')
def job_init_from(t: h.Trainer, root: Path) -> tuple[subprocess.CompletedProcess, dict, dict]:
    """The initial state of a 2-class run with init_from=<the 3-class reference workdir>,
    and of the same run without init_from: (process, tuned, fresh) by leaf path."""
    data2 = h.make_dataset(root / 'data2', num_classes=2, seed=1)
    out = root / 'vars.npz'
    proc = h.run_pinned(
        [
            sys.executable,
            '-c',
            INIT_FROM_SCRIPT,
            str(data2),
            str(t.data_cache),
            str(t.base),
            str(out),
        ],
        t.env(),
        root,
    )
    arrays = dict(np.load(out)) if out.exists() else {}
    pick = lambda name: {k[len(name) :]: v for k, v in arrays.items() if k.startswith(name)}
    return proc, pick('tuned'), pick('fresh')


# (overrides, devices, strings the output must contain)
CASES = {
    'unknown_field_flag': (['--config.optimiser.name=x'], 1, ['optimiser', 'optimizer']),
    'model_name': (
        ['--config.model.name=ghostnet_tiny'],
        1,
        ['model.name', "'ghostnet_tiny'", 'ghostnet_cifar_tiny', 'ghostnet_100'],
    ),
    'optimizer_name': (
        ['--config.optimizer.name=lamb'],
        1,
        ['optimizer.name', "'lamb'", 'sgd, adam, adamw'],
    ),
    'parallel': (['--config.parallel=spmd'], 1, ['parallel', "'spmd'", 'jit, pmap']),
    'batch_size': (['--config.batch_size=12'], 8, ['batch_size=12', '8 devices', 'multiple of 8']),
    'eval_batch_size': (['--config.eval_batch_size=4'], 8, ['eval_batch_size=4', 'multiple of 8']),
    'time_budget': (
        ['--config.time_budget_minutes=-5'],
        1,
        ['time_budget_minutes', 'non-negative', '-5.0'],
    ),
}


def test_bad_configs_fail_with_a_clear_message(trainer, tmp_path):
    typo = tmp_path / 'typo_config.py'
    typo.write_text(
        textwrap.dedent("""
        from ghostnet_jax.configs import smoke

        def get_config():
            config = smoke.get_config()
            config.optimizer.learning_rte = 0.01
            return config
    """)
    )
    cases = dict(CASES, config_file_typo=([], 1, ['optimizer.learning_rte', 'learning_rate']))
    runs = {}
    for name, (overrides, devices, _) in cases.items():  # all at once: each is ~1-3 s
        config = str(typo) if name == 'config_file_typo' else h.SMOKE
        runs[name] = trainer.start(tmp_path / name, *overrides, devices=devices, config=config)
    for name, run in runs.items():
        run.wait(120)
        out = run.output()
        assert run.rc not in (0, None), f'{name}: accepted\n{run.tail()}'
        last_line = [line for line in out.splitlines() if line.strip()][-1]
        for needle in cases[name][2]:
            assert needle in last_line, f'{name}: {needle!r} not in the message\n{run.tail(3000)}'
        # One paragraph and exit 2 for every one, the misspelled --config.FIELD too.
        assert run.rc == 2 and 'error: bad config: ' in last_line and 'Traceback' not in out, name
        assert not (run.workdir / 'checkpoints').exists(), name


def test_init_from_another_run_with_other_classes(trainer, base_run):
    """A 2-class run started with init_from=<the 3-class reference workdir>: the classifier
    keeps its fresh init, every other weight and BN statistic is the reference's final one."""
    proc, tuned, fresh = trainer.result('init_from')
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert 're-initialized 2 variables' in proc.stderr, proc.stderr[-3000:]
    loaded = h.flat(load_variables(base_run))
    assert tuned.keys() == fresh.keys() == loaded.keys()
    classifier = {k for k in tuned if "['classifier']" in k}
    assert classifier == {"['params']['classifier']['kernel']", "['params']['classifier']['bias']"}
    for k in classifier:
        assert tuned[k].shape[-1] == 2 and loaded[k].shape[-1] == 3
        np.testing.assert_array_equal(tuned[k], fresh[k], err_msg=k)
    for k in tuned.keys() - classifier:
        np.testing.assert_array_equal(tuned[k], loaded[k], err_msg=k)
        assert not np.array_equal(fresh[k], loaded[k]), k  # the reference run trained it


def test_init_from_another_architecture_is_refused_in_one_paragraph(trainer, base_run, tmp_path):
    """The reference run is ghostnet_cifar_tiny; a config naming ghostnet_cifar_050 with it
    as init_from stops before anything is built (exit 5), naming both and the flag."""
    run = trainer.run(
        tmp_path / 'arch',
        f'--config.init_from={base_run}',
        '--config.model.name=ghostnet_cifar_050',
    )
    out = run.output()
    last_line = [line for line in out.splitlines() if line.strip()][-1]
    assert run.rc == 5 and 'error: checkpoint error: ' in last_line, run.tail()
    for needle in (
        'ghostnet_cifar_tiny',
        'ghostnet_cifar_050',
        '--config.model.name=ghostnet_cifar_tiny',
    ):
        assert needle in last_line, last_line
    assert 'Traceback' not in out and not (run.workdir / 'checkpoints').exists()
