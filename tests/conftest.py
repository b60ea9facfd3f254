"""Session fixtures for the end-to-end trainer tests (tests/test_train_*.py)."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import forked_cli
import pytest
import train_harness as h

# Unoptimized XLA code generation for the test process too (subprocess runs set it
# themselves): compiling is most of what the in-process model, export and evaluation tests
# spend, and no test here measures speed. Must happen before jax is first imported.
if h.XLA_TEST_FLAGS not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {h.XLA_TEST_FLAGS}'.strip()

# Decoded-split caches of in-process tests go to a folder of this session, never to the
# user's ~/.cache (runs started by the harness get their own GHOSTNET_JAX_CACHE).
if 'GHOSTNET_JAX_CACHE' not in os.environ:
    _cache = tempfile.mkdtemp(prefix='ghostnet_jax_test_cache_')
    os.environ['GHOSTNET_JAX_CACHE'] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

# One persistent compilation cache for the whole session: the CLI runs of the trainer and
# study tests and this process compile the same tiny programs (same model, batch and image
# size); each is compiled once and loaded by the others. Set before jax is imported.
if not os.environ.get('GHOSTNET_JAX_TEST_COMPILE_CACHE'):
    _compile_cache = tempfile.mkdtemp(prefix='ghostnet_jax_test_jax_cache_')
    os.environ['GHOSTNET_JAX_TEST_COMPILE_CACHE'] = _compile_cache
    atexit.register(shutil.rmtree, _compile_cache, ignore_errors=True)
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.environ['GHOSTNET_JAX_TEST_COMPILE_CACHE'])
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

# Jobs (train_harness.JOBS): CLI runs in the background, declared by each test module next to
# its tests. The jobs of the selected modules start when the session starts (those after the
# reference run as soon as it has filled the compilation cache), and the tests that wait for
# them run last: the in-process tests run meanwhile, so both cores stay busy.
_BACKGROUND_FIXTURES = {'trainer', 'base_run'}


def _waits_for_background(item) -> bool:
    return bool(_BACKGROUND_FIXTURES & set(getattr(item, 'fixturenames', ())))


def pytest_collection_modifyitems(session, config, items):
    """The tests that wait for background runs go last, in their order (stable sort)."""
    items.sort(key=_waits_for_background)


_SESSION_TRAINERS: list = []


@pytest.fixture(scope='session')
def trainer(tmp_path_factory):
    """The tiny folder dataset plus data and compilation caches shared by every run."""
    root = tmp_path_factory.mktemp('train_e2e')
    data = h.make_dataset(root / 'data')
    t = h.Trainer(
        root, data, root / 'data_cache', Path(os.environ['GHOSTNET_JAX_TEST_COMPILE_CACHE'])
    )
    # The runs' fork server (tests/forked_cli.py), started here in the main thread before
    # any run: it inherits this process's environment, swapped for the runs' own.
    forked_cli.start_server(t.env())
    _SESSION_TRAINERS.append(t)
    yield t
    t.close()


def pytest_terminal_summary(terminalreporter):
    """The background jobs' schedule: which job the suite's end waited for (a test that
    waits long for a job that started late is the suite's critical path)."""
    for t in _SESSION_TRAINERS:
        if t.timeline:
            terminalreporter.section('background jobs (seconds into the session)')
            terminalreporter.write_line(t.schedule())


@pytest.fixture(scope='session', autouse=True)
def _background_runs(request):
    """Starts the reference run and the selected modules' jobs at the start of the session."""
    selected = [item for item in request.session.items if _waits_for_background(item)]
    if not selected:
        return
    t = request.getfixturevalue('trainer')
    modules = {item.module.__name__ for item in selected}
    jobs = [name for name, job in h.JOBS.items() if job.module in modules]
    if any('base_run' in item.fixturenames for item in selected) or any(
        h.JOBS[name].after == 'base' for name in jobs
    ):
        t.launch('base')
    for name in jobs:
        t.launch(name)


@pytest.fixture(scope='session')
def base_run(trainer) -> Path:
    """The uninterrupted 1-device reference run (h.EPOCHS epochs, a checkpoint every epoch).

    Early stopping is on, monitoring the training loss with patience 2: on this learnable
    data the loss keeps falling, so it must not fire (test_train_callbacks checks that
    against the recorded history)."""
    return trainer.result('base')
