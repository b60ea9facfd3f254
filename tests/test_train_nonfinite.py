"""A diverging run stops with exit code 3 naming the step; the last good checkpoint survives."""

import shutil
from pathlib import Path

import numpy as np
import train_harness as h

from ghostnet_jax.training.checkpoints import load_variables


@h.job('nonfinite', after='base')
def job_nonfinite(t: h.Trainer, root: Path) -> h.Run:
    """Resumes the reference run's first checkpoint with an absurd learning rate: the first
    step after the resume is still finite, its update blows the weights up."""
    workdir = root / 'run'
    step = str(h.STEPS_PER_EPOCH)
    shutil.copytree(t.base / 'checkpoints' / step, workdir / 'checkpoints' / step)
    return t.run(workdir, '--config.optimizer.learning_rate=1e30')


def test_huge_learning_rate_exits_3_and_keeps_the_last_good_checkpoint(trainer, base_run):
    run = trainer.result('nonfinite')  # the reference checkpoint 4, resumed with lr=1e30
    good, workdir = h.STEPS_PER_EPOCH, run.workdir
    assert run.rc == 3, run.tail()

    steps = h.train_steps(workdir)
    bad = [s for s, r in sorted(steps.items()) if r['loss'] is None]
    assert bad, 'no non-finite loss was logged'
    first_bad = bad[0]
    assert first_bad > good + 1 and steps[good + 1]['loss'] is not None
    assert f'Loss is not finite at step {first_bad} ' in run.output(), run.tail()
    assert f'Last good checkpoint: step {good}' in run.output(), run.tail()

    # No checkpoint was written after the divergence, and every checkpoint is finite.
    assert h.finished_steps(workdir) == [good]
    assert not list((workdir / 'checkpoints').glob('*tmp*'))
    for step in h.finished_steps(workdir):
        arrays = h.state_arrays(workdir, step)
        assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == 'f'), step
    h.assert_trees_equal(
        h.flat(load_variables(workdir)),
        h.flat(load_variables(base_run / 'checkpoints' / str(good))),
        'last good checkpoint',
    )
    assert not (workdir / 'results.json').exists()


def test_a_loss_that_is_bad_before_the_first_save_says_there_is_no_checkpoint():
    from ghostnet_jax.training.trainer import nonfinite_message

    first = nonfinite_message(2, 4, None, '/w/checkpoints')
    assert first.startswith('Loss is not finite at step 3 (epoch 1);')
    assert 'No checkpoint was saved' in first and 'None' not in first
    later = nonfinite_message(9, 4, 8, '/w/checkpoints')
    assert (
        'step 10 (epoch 3)' in later and 'Last good checkpoint: step 8 in /w/checkpoints' in later
    )
