"""How every command fails: one paragraph on stderr and a documented exit code.

| code | meaning |
|---|---|
| 0 | done (also: preempted by SIGTERM after saving; rerun to resume) |
| 1 | unexpected error (a bug: the traceback is printed), or a failed check (sanity, export) |
| 2 | bad command line or config, missing optional extra, resume that would change the run |
| 3 | the training loss became NaN/inf |
| 4 | data error: dataset not available, split not found, unreadable image |
| 5 | checkpoint error: missing, damaged or unusable checkpoint or weights file |
| 6 | storage error: workdir not writable, disk full |
| 130 | interrupted (Ctrl-C) |

The verbosity rule, the same for every command: `--verbose`, or GHOSTNET_JAX_VERBOSE set to
1/true/yes/on, adds the traceback of an expected failure (unexpected ones always have it).
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Callable

OK, UNEXPECTED, USAGE, NONFINITE, DATA, CHECKPOINT, STORAGE, INTERRUPTED = 0, 1, 2, 3, 4, 5, 6, 130
VERBOSE_ENV = 'GHOSTNET_JAX_VERBOSE'
_ON, _OFF = ('1', 'true', 'yes', 'on'), ('', '0', 'false', 'no', 'off')

_STORAGE_HINTS = {
    errno.ENOSPC: 'the disk is full: free space',
    errno.EDQUOT: 'the disk quota is exceeded: free space',
    errno.EACCES: 'permission denied: choose a writable --workdir or fix its permissions',
    errno.EROFS: 'the file system is read-only: choose another --workdir',
    errno.ENOTDIR: 'a path component is a file, not a folder: choose another --workdir',
    errno.EEXIST: 'a file is in the way: choose another output path',
}


class UsageError(ValueError):
    """Command-line arguments that cannot work together or name nothing usable."""


class CheckFailed(RuntimeError):
    """A check the command ran did not pass (exit code 1, without a traceback)."""


def verbose(argv: list[str] | None = None) -> bool:
    """The one verbosity rule: --verbose in `argv`, or GHOSTNET_JAX_VERBOSE on."""
    if argv is not None and '--verbose' in argv:
        return True
    value = os.environ.get(VERBOSE_ENV, '').strip().lower()
    if value not in _ON + _OFF:
        print(
            f'ghostnet_jax: {VERBOSE_ENV}={value!r} is not one of {", ".join(_ON + _OFF[1:])}; '
            'treating it as on.',
            file=sys.stderr,
        )
    return value not in _OFF


def classify(error: BaseException) -> tuple[int, str] | None:
    """(exit code, one-paragraph message) for an expected failure, else None."""
    # Imported here: a command pays only for the library parts it imported itself.
    from ghostnet_jax.data.errors import DataError, user_message
    from ghostnet_jax.models.pytorch_weights import PyTorchWeightsError
    from ghostnet_jax.models.registry import ModelInputError
    from ghostnet_jax.optional import MissingExtraError
    from ghostnet_jax.serving.quantization import QuantizationOptionError
    from ghostnet_jax.training.checkpoints import CheckpointError
    from ghostnet_jax.training.config_checks import ConfigError
    from ghostnet_jax.training.loop_state import NonFiniteLossError
    from ghostnet_jax.training.model_spec import ModelSpecError
    from ghostnet_jax.training.resume_checks import ResumeMismatchError

    if isinstance(error, (ConfigError, ResumeMismatchError)):
        return USAGE, f'bad config: {error}'
    if isinstance(error, (UsageError, MissingExtraError, ModelInputError, QuantizationOptionError)):
        return USAGE, str(error)
    if isinstance(error, NonFiniteLossError):
        return NONFINITE, str(error)
    if isinstance(error, DataError):
        return DATA, user_message(error)
    if isinstance(error, (CheckpointError, ModelSpecError, PyTorchWeightsError)):
        return CHECKPOINT, f'checkpoint error: {error}'
    # By name: importing the exporters (and jax) only to classify an error is not worth it.
    mismatch = any(c.__name__ == 'ExportMismatchError' for c in type(error).__mro__)
    if isinstance(error, CheckFailed) or mismatch:
        return UNEXPECTED, f'check failed: {error}'
    if isinstance(error, OSError) and error.errno in _STORAGE_HINTS:
        where = f' ({error.filename})' if error.filename else ''
        return STORAGE, (
            f'cannot write{where}: {error.strerror}; {_STORAGE_HINTS[error.errno]}. '
            'Nothing already saved was removed: rerun the same command to resume '
            'from the last finished checkpoint.'
        )
    return None


def report(error: BaseException, prog: str, show_traceback: bool = False) -> int:
    """Prints `error` as a user reads it and returns its exit code."""
    known = classify(error)
    if known is None or show_traceback:
        traceback.print_exception(error, file=sys.stderr)
    if known is None:
        print(
            f'{prog}: unexpected error: {type(error).__name__}: {error} (the traceback is '
            'above; please report it)',
            file=sys.stderr,
        )
        return UNEXPECTED
    code, message = known
    print(f'{prog}: error: {message.strip()}', file=sys.stderr)
    return code


def run_command(prog: str, body: Callable[[], int | None], argv: list[str] | None = None) -> int:
    """Calls `body()`; every failure becomes a paragraph and its exit code."""
    try:
        return body() or OK
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        return INTERRUPTED
    except SystemExit:
        raise
    except Exception as e:  # every failure gets a code; unknown ones a traceback
        return report(e, prog, show_traceback=verbose(argv if argv is not None else sys.argv[1:]))
