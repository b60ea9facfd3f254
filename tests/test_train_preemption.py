"""Pod-wide preemption: workers are signalled at different moments, but all must stop at
the same step and save once, together (job_distributed_sigterm below: two
jax.distributed processes, SIGTERM to process 1 only). And pmap, which maps over one
process's devices, is refused up front in a multi-process run."""

import re
import signal
from pathlib import Path

import test_train_distributed  # noqa: F401  (declares the job 'distributed')
import train_harness as h


@h.job('distributed_sigterm', after='distributed')
def job_distributed_sigterm(t: h.Trainer, root: Path) -> dict:
    """Two processes; once the first checkpoint exists only process 1 gets SIGTERM. Then
    both are rerun in the same workdir."""
    procs = h.distributed_runs(t, root / 'run', f'--config.max_steps={h.DIST_STEPS}')
    h.wait_for_checkpoint(procs[0], h.STEPS_PER_EPOCH)
    procs[1].signal(signal.SIGTERM)
    for p in procs:
        p.wait()
    steps = h.finished_steps(procs[0].workdir)
    left = dict(
        rc=[p.rc for p in procs],
        steps=steps,
        outputs=[p.output() for p in procs],
        results=(root / 'run' / 'results.json').exists(),
    )
    reruns = [
        p.wait()
        for p in h.distributed_runs(
            t, root / 'run', f'--config.max_steps={h.DIST_STEPS}', log_prefix='rerun'
        )
    ]
    pmap = [
        p.wait(120)
        for p in h.distributed_runs(t, root / 'pmap', '--config.parallel=pmap', log_prefix='pmap')
    ]
    return dict(procs=procs, left=left, reruns=reruns, pmap=pmap)


def test_sigterm_to_one_process_stops_both_at_the_same_step(trainer):
    out = trainer.result('distributed_sigterm')
    left = out['left']
    assert left['rc'] == [0, 0], [p.tail() for p in out['procs']]
    said = [re.findall(r'preempted \(SIGTERM\) at step (\d+)', o) for o in left['outputs']]
    assert said[0] and said[1] and said[0][-1] == said[1][-1], said
    stopped = int(said[0][-1])
    assert h.STEPS_PER_EPOCH < stopped < h.DIST_STEPS, 'the run was not interrupted'
    assert left['steps'][-1] == stopped, left['steps']
    assert not left['results']

    # Rerun: both resume from that step and end exactly where the uninterrupted
    # two-process run (job_distributed) ended.
    for p in out['reruns']:
        assert p.rc == 0, p.tail()
        assert f'Resumed from step {stopped}' in p.output(), p.tail()
    uninterrupted = trainer.result('distributed')[0].workdir
    workdir = out['procs'][0].workdir
    h.assert_trees_equal(
        h.state_arrays(workdir, h.DIST_STEPS),
        h.state_arrays(uninterrupted, h.DIST_STEPS),
        'preempted + resumed vs uninterrupted, two processes',
    )
    got, ref = h.train_steps(workdir), h.train_steps(uninterrupted)
    assert [got[s]['loss'] for s in range(1, h.DIST_STEPS + 1)] == [
        ref[s]['loss'] for s in range(1, h.DIST_STEPS + 1)
    ]


def test_pmap_with_two_processes_is_refused_before_compiling(trainer):
    for p in trainer.result('distributed_sigterm')['pmap']:
        assert p.rc == 2, p.tail()
        assert "parallel='pmap' runs on one process only" in p.output(), p.tail()
        assert 'Traceback' not in p.output()
        assert not (p.workdir / 'checkpoints').exists()
