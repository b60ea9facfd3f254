"""config.time_budget_minutes through the CLI (job_time_budget below).

The length is fitted before training, refitted once after the first epoch from the loop's
own timing, and then belongs to the run: a resume under another budget keeps it, and
training to the same step with num_epochs set to the fitted value by hand gives
bit-identical weights and losses (warmup spans the first epoch, which therefore trains
alike for every length; afterwards the schedule spans the fitted length)."""

import json
import shutil
from pathlib import Path

import train_harness as h


@h.job('time_budget', after='base')
def job_time_budget(t: h.Trainer, root: Path) -> dict:
    """A time-budgeted run stopped at max_steps, resumed under another budget to more steps,
    and the same length trained without a budget (num_epochs = the fitted value); plus a
    budget too small for one epoch. Warmup spans the first epoch, so the refit after it
    leaves no trace and the fitted length alone reproduces the run."""
    warmup = '--config.optimizer.warmup_epochs=1'
    too_small = t.start(root / 'too_small', '--config.time_budget_minutes=0.001')
    runs = {
        'first': t.run(
            root / 'budget',
            '--config.time_budget_minutes=10',
            warmup,
            f'--config.max_steps={h.STEPS_PER_EPOCH}',
            log_name='first',
        )
    }
    config_after_first = json.loads((root / 'budget' / 'config.json').read_text())
    fitted = json.loads((root / 'budget' / 'results.json').read_text())['num_epochs']
    runs['resumed'] = t.run(
        root / 'budget',
        '--config.time_budget_minutes=20',
        warmup,
        f'--config.max_steps={h.PARALLEL_STEPS}',
        log_name='resumed',
    )
    runs['reference'] = t.run(
        root / 'reference',
        f'--config.num_epochs={fitted}',
        warmup,
        f'--config.max_steps={h.PARALLEL_STEPS}',
    )
    runs['too_small'] = too_small.wait()
    # A run that started without a budget keeps its length when a budget appears.
    unbudgeted = root / 'unbudgeted'
    shutil.copytree(root / 'reference', unbudgeted)
    runs['late_budget'] = t.run(
        unbudgeted,
        '--config.time_budget_minutes=10',
        warmup,
        f'--config.num_epochs={fitted}',
        f'--config.max_steps={h.PARALLEL_STEPS + h.STEPS_PER_EPOCH}',
        log_name='late_budget',
    )
    return {'runs': runs, 'fitted': fitted, 'config_after_first': config_after_first}


LOW_RES_FLAGS = (
    '--config.data.low_res.size=8',
    # Any tiny fraction means exactly one small epoch, whatever length fits.
    '--config.data.low_res.epochs_fraction=0.000001',
)


@h.job('low_res_budget')
def job_low_res_budget(t: h.Trainer, root: Path) -> dict:
    """A budgeted run whose first epoch trains on 8x8 images: stopped inside that epoch,
    resumed across the switch to full size (the refit after epoch 1, which also times the
    full-size step, happens in the resumed process), resumed again for epoch 3, and the
    same length trained straight through without a budget."""
    flags = (
        '--config.optimizer.warmup_epochs=1',
        *LOW_RES_FLAGS,
        f'--config.model.name={h.LOW_RES_MODEL}',
    )
    workdir = root / 'budget'
    runs = {
        'first': t.run(
            workdir,
            '--config.time_budget_minutes=10',
            *flags,
            '--config.max_steps=2',
            log_name='first',
        )
    }
    runs['resumed'] = t.run(
        workdir,
        '--config.time_budget_minutes=10',
        *flags,
        f'--config.max_steps={h.PARALLEL_STEPS}',
        log_name='resumed',
    )
    runs['third_epoch'] = t.run(
        workdir,
        '--config.time_budget_minutes=10',
        *flags,
        f'--config.max_steps={3 * h.STEPS_PER_EPOCH}',
        log_name='third_epoch',
    )
    fitted = json.loads((workdir / 'results.json').read_text())['num_epochs']
    runs['reference'] = t.run(
        root / 'reference',
        f'--config.num_epochs={fitted}',
        *flags,
        f'--config.max_steps={3 * h.STEPS_PER_EPOCH}',
    )
    return {'runs': runs, 'fitted': fitted}


def test_budget_fits_num_epochs_and_a_resume_keeps_it(trainer):
    job = trainer.result('time_budget')
    runs, fitted = job['runs'], job['fitted']
    for name in ('first', 'resumed', 'reference'):
        assert runs[name].rc == 0, runs[name].tail()
    budget = runs['first'].workdir
    results = json.loads((budget / 'results.json').read_text())
    plan = results['time_budget']
    assert plan['num_epochs'] == fitted > 2
    assert plan['budget_s'] == 600.0 and plan['steps_per_epoch'] == h.STEPS_PER_EPOCH
    assert plan['predicted_s'] <= 600.0
    assert plan['epochs_done'] == 1 and plan['calibrated_step_s'] > 0  # refitted once
    assert 'refit after epoch 1' in runs['first'].output()
    assert 'refit' not in runs['resumed'].output()  # the stored plan is kept
    for changed in ('changed optimizer', 'changed num_epochs'):  # config.json's values
        assert changed not in runs['resumed'].output(), changed
    assert 'fitted to 10 min' in runs['resumed'].output()  # the 20-min rerun was told
    # The config the user gave is never rewritten: the fitted length is the run's own.
    assert job['config_after_first']['num_epochs'] == h.EPOCHS != fitted
    assert json.loads((budget / 'config.json').read_text()) == job['config_after_first']
    assert results['num_epochs'] == fitted
    assert h.host_state(budget, h.PARALLEL_STEPS)['num_epochs'] == fitted
    h.assert_trees_equal(
        h.state_arrays(budget, h.PARALLEL_STEPS),
        h.state_arrays(runs['reference'].workdir, h.PARALLEL_STEPS),
        'budgeted run resumed vs num_epochs=fitted',
    )
    ours, ref = h.train_steps(budget), h.train_steps(runs['reference'].workdir)
    assert [ours[s]['loss'] for s in sorted(ref)] == [ref[s]['loss'] for s in sorted(ref)]
    assert [ours[s]['learning_rate'] for s in sorted(ref)] == [
        ref[s]['learning_rate'] for s in sorted(ref)
    ]


def test_budget_too_small_for_one_epoch_is_refused(trainer):
    run = trainer.result('time_budget')['runs']['too_small']
    assert run.rc == 2, run.tail()
    assert 'fits no full epoch' in run.output() and 'Raise time_budget_minutes' in run.output()
    assert h.finished_steps(run.workdir) == []


def test_a_budget_given_to_a_run_that_started_without_one_is_ignored(trainer):
    job = trainer.result('time_budget')
    run = job['runs']['late_budget']
    assert run.rc == 0, run.tail()
    assert 'time_budget_minutes=10 is ignored' in run.output()
    step = h.PARALLEL_STEPS + h.STEPS_PER_EPOCH
    assert h.host_state(run.workdir, step)['num_epochs'] == job['fitted']
    assert h.host_state(run.workdir, step).get('time_budget') is None


def test_low_res_first_epoch_under_a_budget_resumes_exactly(trainer):
    """data.low_res with a budget: the calibration times both sizes, epoch 1 trains on 8x8
    images and epoch 2 on the data's 16x16, the budget refits once, after epoch 1 (timing
    the full-size step then), and a run stopped inside the small epoch and resumed across
    the refit and past it equals one trained straight through with the fitted length. The
    network is GhostNetV3-tiny (h.LOW_RES_MODEL): its branches and DFC attention resume
    bit-exactly too."""
    job = trainer.result('low_res_budget')
    runs, fitted = job['runs'], job['fitted']
    for name in ('first', 'resumed', 'third_epoch', 'reference'):
        assert runs[name].rc == 0, runs[name].tail()
    budget, reference = runs['first'].workdir, runs['reference'].workdir
    end = 3 * h.STEPS_PER_EPOCH
    assert h.host_state(budget, end)['model_spec']['model_name'] == h.LOW_RES_MODEL
    plan = h.host_state(budget, end)['time_budget']
    assert plan['num_epochs'] == fitted > 3 and plan['epochs_done'] == 1
    assert 0 < plan['low_res_step_s'] and plan['low_res_fraction'] == 1e-6
    assert plan['fitted_small_epochs'] in (0, 1)  # 1e-6 of any length rounds to 1
    resumed = runs['resumed'].output()
    assert 'refit after epoch 1' in resumed and 'at the low size (calibration' in resumed
    assert 'refit after epoch 2' not in resumed
    assert 'refit' not in runs['third_epoch'].output()
    for name, changed in [
        (n, c)
        for n in ('resumed', 'third_epoch')
        for c in ('changed optimizer', 'changed num_epochs')
    ]:
        assert changed not in runs[name].output(), (name, changed)
    assert 'Epoch 1 on: training images 8x8' in runs['first'].output()
    assert 'Epoch 2 on: training images at full size' in resumed
    assert json.loads((budget / 'config.json').read_text())['num_epochs'] == h.EPOCHS
    for workdir in (budget, reference):
        sizes = {
            r['epoch']: r['image_size']
            for r in h.metrics(workdir)
            if r['split'] == 'train' and 'image_size' in r
        }
        assert sizes == {1: 8, 2: h.IMAGE_SIZE, 3: h.IMAGE_SIZE}, workdir
    h.assert_trees_equal(
        h.state_arrays(budget, end),
        h.state_arrays(reference, end),
        'low-res budgeted run, resumed vs straight through',
    )
    ours, ref = h.train_steps(budget), h.train_steps(reference)
    assert sorted(ref) == sorted(ours)
    for key in ('loss', 'learning_rate'):
        assert [ours[s][key] for s in sorted(ref)] == [ref[s][key] for s in sorted(ref)], key
