"""Two `jax.distributed` processes on localhost (1 CPU device each) train like one process;
only process 0 writes logs, and each process decodes only its own rows of the data.

The reference is the 1-device run (its first two epochs): test_train_parallel shows that
the device count only changes the reduction order, so the 2-device result must agree with
it to the same tolerance.
"""

import json
from pathlib import Path

import numpy as np
import train_harness as h

from ghostnet_jax.training.checkpoints import load_variables


@h.job('distributed')
def job_distributed(t: h.Trainer, root: Path) -> list[h.Run]:
    """Two jax.distributed processes with one CPU device each, sharing one workdir (also the
    uninterrupted reference of job_distributed_sigterm)."""
    # A process whose peer died is aborted by JAX (SIGABRT); the timeout is a backstop.
    return [
        p.wait() for p in h.distributed_runs(t, root / 'run', f'--config.max_steps={h.DIST_STEPS}')
    ]


def test_two_processes_match_the_single_process_run(trainer, base_run):
    steps = h.PARALLEL_STEPS
    procs = trainer.result('distributed')
    for p in procs:
        assert p.rc == 0, p.tail()
    assert 'Devices: 2 (cpu), processes: 2' in procs[0].output(), procs[0].tail()
    # Each process decoded only the rows its device holds: train rows [0, 19) / [19, 38) of
    # 38, and its half of every eval batch's columns (0-3 and 8-9 / 4-7 of 10).
    for p, train_rows, val_rows in ((procs[0], 19, 6), (procs[1], 19, 4)):
        out = p.output()
        assert f'train[:80%]: this process reads {train_rows} of {h.TRAIN_EXAMPLES} rows' in out, (
            p.tail()
        )
        assert f'train[80%:]: this process reads {val_rows} of {h.VAL_EXAMPLES} rows' in out, (
            p.tail()
        )
    workdir = procs[0].workdir

    got, want = h.train_steps(workdir), h.train_steps(base_run)
    assert sorted(got) == list(range(1, h.DIST_STEPS + 1))
    np.testing.assert_allclose(
        [got[s]['loss'] for s in range(1, steps + 1)],
        [want[s]['loss'] for s in range(1, steps + 1)],
        rtol=1e-4,
    )
    assert h.finished_steps(workdir) == list(
        range(h.STEPS_PER_EPOCH, h.DIST_STEPS + 1, h.STEPS_PER_EPOCH)
    )
    h.assert_trees_close(
        h.flat(load_variables(workdir / 'checkpoints' / str(steps))),
        h.flat(load_variables(base_run / 'checkpoints' / str(steps))),
        '2 processes vs 1 device',
        rtol=1e-4,
        atol=1e-5,
    )
    val, ref_val = h.val_epochs(workdir), h.val_epochs(base_run)
    for epoch in (1, 2):
        assert val[epoch]['accuracy'] == ref_val[epoch]['accuracy']
        np.testing.assert_allclose(val[epoch]['loss'], ref_val[epoch]['loss'], rtol=1e-4)
    results = json.loads((workdir / 'results.json').read_text())
    assert results['val']['num_examples'] == h.VAL_EXAMPLES
    assert results['stop_reason'] == f'max_steps={h.DIST_STEPS} reached'

    # Only process 0 logs: one record per step in metrics.jsonl, one event file, progress.
    assert (
        len([r for r in h.metrics(workdir) if r['split'] == 'train' and 'loss' in r])
        == h.DIST_STEPS
    )
    assert len(list((workdir / 'tensorboard').glob('events.out.tfevents.*'))) == 1
    assert 'epoch 2/' in procs[0].output() and 'epoch 2/' not in procs[1].output()
