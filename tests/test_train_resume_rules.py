"""What a rerun in an existing workdir does (job_resume_rules below): a finished run
says so and leaves its results alone; a resume that would continue another experiment
(other seed, batch size) is refused before anything is written, naming the fields; an
unchanged config resumes without warnings."""

import json
import shutil
from pathlib import Path

import pytest
import train_harness as h


@h.job('resume_rules', after='base')
def job_resume_rules(t: h.Trainer, root: Path) -> dict[str, h.Run]:
    """Reruns of finished runs and resumes that change the experiment."""
    finished = root / 'finished'
    shutil.copytree(t.base, finished)
    runs = {'finished': t.run(finished, *h.BASE_FLAGS, log_name='finished')}
    changed = root / 'changed'
    (changed / 'checkpoints').mkdir(parents=True)
    shutil.copytree(
        t.base / 'checkpoints' / str(h.STEPS_PER_EPOCH),
        changed / 'checkpoints' / str(h.STEPS_PER_EPOCH),
    )
    runs['changed'] = t.run(
        changed, *h.BASE_FLAGS, '--config.seed=1', '--config.batch_size=4', log_name='changed'
    )
    return runs


def test_rerunning_a_finished_run_leaves_it_alone(trainer, base_run):
    run = trainer.result('resume_rules')['finished']
    assert run.rc == 0, run.tail()
    assert 'This run is finished (completed)' in run.output(), run.tail()
    assert (run.workdir / 'results.json').read_bytes() == (base_run / 'results.json').read_bytes()
    assert h.finished_steps(run.workdir) == h.finished_steps(base_run)
    assert len(h.metrics(run.workdir)) == len(h.metrics(base_run))  # nothing trained or logged


def test_a_resume_that_changes_the_experiment_is_refused(trainer):
    run = trainer.result('resume_rules')['changed']
    assert run.rc == 2, run.tail()
    last = [line for line in run.output().splitlines() if line.strip()][-1]
    for needle in ('seed: 0 -> 1', 'batch_size: 8 -> 4', 'new --workdir'):
        assert needle in last, (needle, run.tail())
    assert 'Traceback' not in run.output()
    # Nothing was written: no logs, no config, no new checkpoint.
    assert sorted(p.name for p in run.workdir.iterdir()) == ['checkpoints']
    assert h.finished_steps(run.workdir) == [h.STEPS_PER_EPOCH]


def test_a_saved_identity_read_back_from_json_matches_its_config(caplog):
    """The identity is stored as JSON, where tuples come back as lists: an unchanged
    config must not warn on every resume (it once warned 'changed optimizer' each time)."""
    from ghostnet_jax.configs import default
    from ghostnet_jax.training.resume_checks import check_resume, run_identity

    config = default.get_config()
    config.optimizer.boundaries_epochs = (3, 6)
    saved = json.loads(json.dumps(run_identity(config)))
    with caplog.at_level('WARNING'):
        check_resume(saved, run_identity(config), [])
    assert caplog.records == []
    config.optimizer.boundaries_epochs = (3, 7)
    with caplog.at_level('WARNING'):
        check_resume(saved, run_identity(config), [], warn=False)
    assert caplog.records == []
    with caplog.at_level('WARNING'):
        check_resume(saved, run_identity(config), [])
    assert 'Resuming with a changed optimizer' in caplog.text


def test_a_field_this_version_no_longer_has_is_nothing_when_unset_and_refused_when_set(caplog):
    """A run saved by an earlier version of this release holds a field since removed, at its
    unset value: it resumes without a word. One whose earlier version set it (the removed
    third budget fit's bend) cannot be continued exactly: refused in one paragraph."""
    from ghostnet_jax.configs import default
    from ghostnet_jax.training.resume_checks import (
        ResumeMismatchError,
        check_resume,
        run_identity,
        written_before_release,
    )

    current = run_identity(default.get_config())
    saved = json.loads(json.dumps(current))
    saved['optimizer']['a_removed_field'] = []
    with caplog.at_level('WARNING'):
        check_resume(saved, current, [])
        written_before_release(saved, current, {'num_epochs': 3}, {'num_epochs'}, 'RUN')
    assert caplog.records == []
    saved['optimizer']['a_removed_field'] = [8, 11]
    with pytest.raises(ResumeMismatchError, match=r'earlier version.*optimizer\.a_removed_field'):
        written_before_release(saved, current, None, set(), 'RUN')
    with pytest.raises(ResumeMismatchError, match=r'time budget respaced_at_step=8'):
        written_before_release(current, current, {'respaced_at_step': 8}, {'num_epochs'}, 'RUN')
