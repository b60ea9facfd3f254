"""Exit codes of the command-line tools, and the one place that turns an expected failure
into one paragraph on stderr instead of a traceback.

| code | meaning |
|---|---|
| 0 | done (also: preempted by SIGTERM after saving; rerun to resume) |
| 1 | unexpected error (a bug: the traceback is printed) |
| 2 | bad command line or config, or a resume that would change the experiment |
| 3 | the training loss became NaN/inf |
| 4 | data error: dataset not available, split not found, unreadable image |
| 5 | checkpoint error: missing, damaged, or would be overwritten |
| 6 | storage error: workdir not writable, disk full |

Set GHOSTNET_JAX_VERBOSE=1 (or pass --verbose where a tool has it) to see the traceback
of an expected failure too.
"""
from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Callable

OK, UNEXPECTED, USAGE, NONFINITE, DATA, CHECKPOINT, STORAGE = 0, 1, 2, 3, 4, 5, 6
# DATA is ghostnet_jax.data.errors.EXIT_CODE (the data package documents its own code).

_STORAGE_HINTS = {
    errno.ENOSPC: 'the disk is full: free space',
    errno.EDQUOT: 'the disk quota is exceeded: free space',
    errno.EACCES: 'permission denied: choose a writable --workdir or fix its permissions',
    errno.EROFS: 'the file system is read-only: choose another --workdir',
    errno.ENOTDIR: 'a path component is a file, not a folder: choose another --workdir',
    errno.EEXIST: 'a file is in the way: choose another --workdir',
}


def classify(error: BaseException) -> tuple[int, str] | None:
    """(exit code, one-paragraph message) for an expected failure, else None."""
    # Imported here: each tool pays only for what it imports itself.
    from ghostnet_jax.data.errors import EXIT_CODE, DataError, user_message
    from ghostnet_jax.training.checkpoints import CheckpointError
    from ghostnet_jax.training.config_checks import ConfigError
    from ghostnet_jax.training.resume_checks import ResumeMismatchError
    from ghostnet_jax.training.trainer import NonFiniteLossError
    from ghostnet_jax.training.model_spec import ModelSpecError

    if isinstance(error, (ConfigError, ResumeMismatchError)):
        return USAGE, f'Bad config: {error}'
    if isinstance(error, NonFiniteLossError):
        return NONFINITE, str(error)
    if isinstance(error, DataError):
        return EXIT_CODE, user_message(error)
    if isinstance(error, (CheckpointError, ModelSpecError)):
        return CHECKPOINT, f'Checkpoint error: {error}'
    if isinstance(error, OSError) and error.errno in _STORAGE_HINTS:
        where = f' ({error.filename})' if error.filename else ''
        return STORAGE, (f'Cannot write{where}: {error.strerror}; {_STORAGE_HINTS[error.errno]}. '
                         'Nothing already saved was removed: rerun the same command to resume '
                         'from the last finished checkpoint.')
    return None


def verbose() -> bool:
    return os.environ.get('GHOSTNET_JAX_VERBOSE', '') not in ('', '0', 'false', 'False')


def report(error: BaseException, prog: str) -> int:
    """Prints `error` as a user reads it and returns the exit code."""
    known = classify(error)
    if known is None or verbose():
        traceback.print_exception(error, file=sys.stderr)
    if known is None:
        return UNEXPECTED
    code, message = known
    print(f'{prog}: error: {message}', file=sys.stderr)
    return code


def run_cli(main: Callable[[], int], prog: str) -> int:
    """Calls `main()`; expected failures become a paragraph and their exit code."""
    try:
        return main()
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        return 130
    except Exception as e:   # every failure gets a code; unknown ones a traceback
        return report(e, prog)
