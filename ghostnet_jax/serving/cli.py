"""How the predict and export command lines fail: one paragraph and a documented code.

Exit codes (README, "Use a trained model"):
    0  success
    1  unexpected error (a bug, or an export that does not match predict)
    2  usage or configuration error (bad flags, a missing optional extra)
    4  data error (an unreadable image, no images found)
    5  checkpoint error (missing, damaged or unusable checkpoint)
A traceback is printed only with --verbose or GHOSTNET_JAX_VERBOSE=1.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

from ghostnet_jax.data.errors import DataError
from ghostnet_jax.training.checkpoints import CheckpointError
from ghostnet_jax.training.model_spec import ModelSpecError

EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_DATA, EXIT_CHECKPOINT = 0, 1, 2, 4, 5
VERBOSE_ENV = 'GHOSTNET_JAX_VERBOSE'


class UsageError(ValueError):
    """Flags that cannot work together or name nothing usable."""


def verbose_requested(argv: list[str] | None) -> bool:
    args = sys.argv[1:] if argv is None else argv
    return '--verbose' in args or os.environ.get(VERBOSE_ENV, '') not in ('', '0')


def run(prog: str, body: Callable[[], int], verbose: bool) -> int:
    """Runs a command's body, mapping expected failures to exit codes."""
    # jax-importing modules: imported here so that --help stays fast.
    from ghostnet_jax.serving.exporters import ExportMismatchError, MissingExtraError
    try:
        return body()
    except KeyboardInterrupt:
        print(f'{prog}: interrupted.', file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure becomes one paragraph + a code
        if isinstance(e, (UsageError, MissingExtraError)):
            code, what = EXIT_USAGE, f'error: {e}'
        elif isinstance(e, DataError):
            code, what = EXIT_DATA, f'data error: {e}'
        elif isinstance(e, (CheckpointError, ModelSpecError)):
            code, what = EXIT_CHECKPOINT, f'checkpoint error: {e}'
        elif isinstance(e, ExportMismatchError):
            code, what = EXIT_UNEXPECTED, f'export check failed: {e}'
        else:
            code, what = EXIT_UNEXPECTED, (
                f'unexpected error: {type(e).__name__}: {e}'
                + ('' if verbose else f' (rerun with --verbose or {VERBOSE_ENV}=1 for the '
                   'traceback)'))
        if verbose:
            traceback.print_exc()
        print(f'{prog}: {what}', file=sys.stderr)
        return code
