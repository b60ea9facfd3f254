"""1 device vs 8 fake devices (jit) vs pmap over 8 devices: the same training run.

The batch order and augmentation are drawn at global batch shape, BatchNorm sees the global
batch in every mode (jit: sharded batch; pmap: `axis_name`), gradients are averaged over all
devices: only the reduction order differs, so losses and weights agree to float tolerance.
Dropout is 0 (as in configs/smoke.py; pmap draws a different mask per device, by design).
"""

from pathlib import Path

import numpy as np
import train_harness as h

from ghostnet_jax.training.checkpoints import load_variables


@h.job('parallel')
def job_parallel(t: h.Trainer, root: Path) -> dict[str, h.Run]:
    """jit and pmap on 8 fake devices, the first two epochs of the reference run."""
    # One after the other: pmap then loads init/eval/data programs jit compiled from the cache.
    return {
        mode: t.run(
            root / mode,
            f'--config.parallel={mode}',
            f'--config.max_steps={h.PARALLEL_STEPS}',
            '--config.model.dropout_rate=0.0',
            devices=8,
        )
        for mode in ('jit', 'pmap')
    }


def test_one_vs_eight_devices_jit_and_pmap_agree(trainer, base_run):
    steps = h.PARALLEL_STEPS
    ref_losses = h.train_steps(base_run)
    ref_val = h.val_epochs(base_run)
    ref_vars = h.flat(load_variables(base_run / 'checkpoints' / str(steps)))
    for mode, run in trainer.result('parallel').items():
        assert run.rc == 0, run.tail()
        assert 'Devices: 8 (cpu)' in run.output(), run.tail()
        losses = h.train_steps(run.workdir)
        assert sorted(losses) == list(range(1, steps + 1))
        for key, rtol in (('loss', 1e-4), ('grad_norm', 1e-3), ('accuracy', 0)):
            np.testing.assert_allclose(
                [losses[s][key] for s in range(1, steps + 1)],
                [ref_losses[s][key] for s in range(1, steps + 1)],
                rtol=rtol,
                err_msg=f'{mode}: per-step train {key}',
            )
        val = h.val_epochs(run.workdir)
        for epoch in (1, 2):
            assert val[epoch]['accuracy'] == ref_val[epoch]['accuracy'], (mode, epoch)
            np.testing.assert_allclose(val[epoch]['loss'], ref_val[epoch]['loss'], rtol=1e-4)
        assert h.finished_steps(run.workdir)[-1] == steps
        got = h.flat(load_variables(run.workdir / 'checkpoints' / str(steps)))
        h.assert_trees_close(
            got, ref_vars, f'{mode} on 8 devices vs 1 device, step {steps}', rtol=1e-4, atol=1e-5
        )
