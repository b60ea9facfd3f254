"""Session fixtures for the end-to-end trainer tests (tests/test_train_*.py)."""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import train_harness as h

# Unoptimized XLA code generation for the test process too (subprocess runs set it
# themselves): compiling is most of what the in-process model, export and evaluation tests
# spend, and no test here measures speed. Must happen before jax is first imported.
if h.XLA_TEST_FLAGS not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {h.XLA_TEST_FLAGS}".strip()

# Decoded-split caches of in-process tests go to a folder of this session, never to the
# user's ~/.cache (runs started by the harness get their own GHOSTNET_JAX_CACHE).
if 'GHOSTNET_JAX_CACHE' not in os.environ:
    _cache = tempfile.mkdtemp(prefix='ghostnet_jax_test_cache_')
    os.environ['GHOSTNET_JAX_CACHE'] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

# Jobs (train_harness.JOBS) and the tests that use them: started early when those tests are
# selected. The first group does not need the reference run; the second does.
JOBS_BEFORE_BASE = {'parallel': 'test_train_parallel.py', 'distributed': 'test_train_distributed.py',
                    'distributed_sigterm': 'test_train_preemption.py', 'ema': 'test_train_ema.py',
                    'final_weights': 'test_train_final_weights.py',
                    'time_budget': 'test_train_time_budget.py',
                    'low_res_budget': 'test_train_time_budget.py'}
JOBS_AFTER_BASE = {'sigkill': 'test_sigkill', 'sigterm': 'test_sigterm',
                   'early_stopping': 'test_early_stopping_fires', 'nonfinite': 'test_train_nonfinite.py',
                   'init_from': 'test_init_from', 'resume_rules': 'test_train_resume_rules.py',
                   'device_counts': 'test_train_device_counts.py', 'faults': 'test_train_faults.py',
                   'stream': 'test_train_stream.py'}


@pytest.fixture(scope='session')
def trainer(tmp_path_factory):
    """The tiny folder dataset plus data and compilation caches shared by every run."""
    root = tmp_path_factory.mktemp('train_e2e')
    data = h.make_dataset(root / 'data')
    compile_cache = os.environ.get('GHOSTNET_JAX_TEST_COMPILE_CACHE') or root / 'jax_cache'
    t = h.Trainer(root, data, root / 'data_cache', Path(compile_cache))
    yield t
    t.close()


def _prefetch(request, trainer, jobs):
    selected = [item.nodeid for item in request.session.items]
    for name, test in jobs.items():
        if any(test in nodeid for nodeid in selected):
            trainer.launch(name)


@pytest.fixture(scope='session')
def base_run(trainer, request) -> Path:
    """The uninterrupted 1-device reference run (h.EPOCHS epochs, a checkpoint every epoch).

    Early stopping is on, monitoring the training loss with patience 2: on this learnable
    data the loss keeps falling, so it must not fire (test_train_callbacks checks that
    against the recorded history)."""
    _prefetch(request, trainer, JOBS_BEFORE_BASE)
    workdir = trainer.root / 'base'
    trainer.run(workdir, *h.BASE_FLAGS).check()
    trainer.base = workdir
    _prefetch(request, trainer, JOBS_AFTER_BASE)
    return workdir
