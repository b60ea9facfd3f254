"""`python -m ghostnet_jax.sanity`: passes on a healthy setup, fails loudly on broken ones."""

import math

import pytest
import study_harness as s
import train_harness as h

from ghostnet_jax.study.sanity import (
    check_gradient_norms,
    check_initial_loss,
    diverged,
    overfit_verdict,
)

# One fixed batch of 64 (the sample), the old snake_case flag spellings on purpose (they
# are aliases). The colour-coded classes are learnt in a few steps; labels permuted anew
# every step (--shuffle-labels) can never be fitted, however long the budget.
SANITY = (
    '--sample_size=64',
    '--max_steps=25',
    '--config.eval_batch_size=32',
    '--config.optimizer.learning_rate=0.05',
)


@h.job('study_sanity')
def _runs(t, root):
    cli = s.Cli(root, per_class=32)  # 78 training images
    procs = {
        'good': cli.start('sanity', f'--workdir={root / "good"}', *SANITY, log='good'),
        'lr': cli.start(
            'sanity',
            f'--workdir={root / "lr"}',
            *SANITY,
            '--config.optimizer.learning_rate=1e3',
            log='lr',
        ),
        'shuffled': cli.start(
            'sanity', f'--workdir={root / "shuffled"}', *SANITY, '--shuffle_labels', log='shuffled'
        ),
    }
    return root, {k: p.wait() for k, p in procs.items()}


@pytest.fixture(scope='module')
def runs(trainer):
    return trainer.result('study_sanity')


def test_healthy_setup_passes_every_check(runs):
    root, procs = runs
    procs['good'].check(0)
    report = s.read_json(root / 'good' / 'sanity.json')
    checks = {c['name']: c for c in report['checks']}
    assert report['passed'] and all(c['passed'] for c in checks.values())
    assert checks['initial_loss']['expected'] == pytest.approx(math.log(3))  # 3 classes
    assert checks['overfit']['steps_to_target'] <= 25
    assert checks['overfit']['sample_size'] == 64 and report['batch_size'] == 64  # one batch
    assert {'stem', 'head', 'stage0'} <= set(checks['gradient_norms']['norms'])
    assert (root / 'good' / 'sanity_overfit.png').stat().st_size > 0
    assert 'SANITY PASSED' in procs['good'].output


@pytest.mark.parametrize('name', ['lr', 'shuffled'])
def test_broken_setups_fail_loudly(runs, name):
    root, procs = runs
    procs[name].check(1)
    report = s.read_json(root / name / 'sanity.json')
    overfit = next(c for c in report['checks'] if c['name'] == 'overfit')
    assert not report['passed'] and not overfit['passed']
    assert 'SANITY FAILED: overfit' in procs[name].output
    if name == 'lr':  # stopped as soon as the loss passed 4x its initial value
        assert overfit['diverged'] and overfit['steps_run'] < 25


def test_initial_loss_tolerance():
    assert check_initial_loss(math.log(10) * 1.2, 10, 0.25)['passed']
    assert not check_initial_loss(math.log(10) * 1.3, 10, 0.25)['passed']
    assert not check_initial_loss(float('nan'), 10, 0.25)['passed']


def test_gradient_norm_flags_name_the_group():
    norms = {'stem': 0.1, 'stage0': 0.2, 'stage1': 1e-6, 'stage2': 500.0, 'head': 0.3}
    check = check_gradient_norms(norms, vanish_ratio=1e-3, explode_ratio=1e3)
    # median of the five is 0.2: 1e-6 < 2e-4 vanishes, 500 > 200 explodes.
    assert check['vanishing'] == ['stage1'] and check['exploding'] == ['stage2']
    assert not check['passed']
    assert check_gradient_norms({'a': 1.0, 'b': float('inf'), 'c': 1.0}, 1e-3, 1e3)[
        'exploding'
    ] == ['b']


def test_the_sample_and_budget_are_sized_to_the_model():
    from ghostnet_jax.study.sanity import default_max_steps, default_sample_size

    assert default_sample_size(42_212) == 32 and default_sample_size(3_913_790) == 64
    assert default_sample_size(3_913_790, num_devices=3) == 66  # divides over devices
    assert default_max_steps(32) == 128 and default_max_steps(64) == 256


def test_overfit_verdict_uses_a_full_pass_of_the_sample():
    # Two batches per pass: step 3 is the first whose last two accuracies average >= 0.99.
    assert overfit_verdict([0.5, 1.0, 1.0, 1.0], 2, 0.99) == 3
    assert overfit_verdict([0.5, 1.0, 0.9], 2, 0.99) is None


def test_divergence_is_a_blown_up_or_non_finite_loss():
    assert diverged([1.1, 5.0], 1.1) and diverged([1.1, float('nan')], 1.1)
    assert not diverged([1.1, 4.0], 1.1) and not diverged([], 1.1)
