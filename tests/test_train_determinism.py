"""What a run's bits depend on (docs/reliability.md#determinism): its config, the device
count and, on a CPU, the number of threads XLA computes with, fixed when the process's
backend starts (NPROC, else the CPUs the process may use then). Every run records that
setup; a resume with the same setup is bit-identical and says nothing (test_train_resume,
test_train_final_weights), one with another thread count goes on to float tolerance and
says so in one line. The suite itself names the thread count of every run it starts
(tests/train_harness.py), so its bit-identity tests cannot depend on the machine or on
which process happened to start first."""

import json
import sys
from pathlib import Path

import test_train_parallel  # noqa: F401  (declares the job 'parallel')
import train_harness as h


@h.job('threads', after='base')
def job_threads(t: h.Trainer, root: Path) -> dict[str, h.Run]:
    """The reference run with one XLA:CPU thread until the end of epoch 2, then resumed with
    two threads to the full length."""
    workdir = root / 'run'
    first = t.run(workdir, *h.BASE_FLAGS, f'--config.max_steps={h.PARALLEL_STEPS}', threads=1)
    return {'first': first, 'resumed': t.run(workdir, *h.BASE_FLAGS, threads=2, log_name='resumed')}


THREADS_SCRIPT = """
import json, os, jax
from ghostnet_jax.training.environment import compute_setup
jax.devices()
names = [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]
print(json.dumps({'pool': sum(n.endswith('XLAEigen') for n in names), **compute_setup()}))
"""


def _setup(env_extra: dict, trainer) -> dict:
    env = {**trainer.env(), **env_extra}
    proc = h.run_pinned([sys.executable, '-c', THREADS_SCRIPT], env, trainer.root / 'threads')
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_pinned_run_starts_its_backend_on_its_one_core(trainer):
    """Without NPROC, the pin alone decides: it must be in place before the backend starts
    (a pin set from outside after the start left some runs with two threads)."""
    env = {k: v for k, v in trainer.env().items() if k != 'NPROC'}
    for _ in range(3):
        proc = h.forked_cli.run(
            [sys.executable, '-c', THREADS_SCRIPT], env, h.REPO, trainer.root / 'threads', cpus={0}
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        seen = json.loads(proc.stdout.strip().splitlines()[-1])
        assert seen['pool'] == 1 and seen['xla_cpu_threads'] == 1, seen


def test_nproc_sets_the_thread_count_and_the_record_matches_the_pool(trainer):
    for threads in (1, 3):
        seen = _setup({'NPROC': str(threads)}, trainer)
        assert seen['pool'] == threads == seen['xla_cpu_threads'], seen
        assert seen['backend'] == 'cpu' and seen['devices'] == 1


def test_every_run_records_the_setup_the_harness_gave_it(trainer, base_run):
    results = json.loads((base_run / 'results.json').read_text())
    assert results['compute'] == [
        {'from_step': 0, 'backend': 'cpu', 'devices': 1, 'xla_cpu_threads': h.THREADS}
    ]
    assert results['environment']['xla_cpu_threads'] == h.THREADS
    parallel = trainer.result('parallel')['jit']
    assert parallel.rc == 0, parallel.tail()
    host = h.host_state(parallel.workdir, h.finished_steps(parallel.workdir)[-1])
    assert host['compute'] == [
        {'from_step': 0, 'backend': 'cpu', 'devices': 8, 'xla_cpu_threads': 8}
    ]  # one per device


def test_a_resume_with_another_thread_count_says_so_and_stays_close(trainer, base_run):
    runs = trainer.result('threads')
    first, resumed = runs['first'], runs['resumed']
    assert first.rc == 0 and resumed.rc == 0, resumed.tail()
    notes = [line for line in resumed.output().splitlines() if 'not bit for bit' in line]
    assert len(notes) == 1, resumed.tail()
    assert (
        f'Resuming at step {h.PARALLEL_STEPS} with XLA:CPU threads 1 -> 2' in notes[0]
        and 'NPROC=1' in notes[0]
    ), notes[0]
    results = json.loads((resumed.workdir / 'results.json').read_text())
    assert [(c['from_step'], c['xla_cpu_threads']) for c in results['compute']] == [
        (0, 1),
        (h.PARALLEL_STEPS, 2),
    ]
    # Until the resume the two runs are the reference run bit for bit (same thread count);
    # after it, the same run to float tolerance.
    h.assert_trees_equal(
        h.state_arrays(first.workdir, h.PARALLEL_STEPS),
        h.state_arrays(base_run, h.PARALLEL_STEPS),
        'one thread vs reference',
    )
    h.assert_trees_close(
        h.state_arrays(resumed.workdir, h.TOTAL_STEPS),
        h.state_arrays(base_run, h.TOTAL_STEPS),
        'resumed on two threads',
        rtol=1e-3,
        atol=1e-4,
    )
