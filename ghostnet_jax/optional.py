"""Optional dependencies: imported where they are needed, with the install line when missing.

The core install (`pip install ghostnet_jax`) trains, evaluates, predicts and exports to
StableHLO. Everything else is an extra of pyproject.toml; a command that needs one and
does not find it stops with `MissingExtraError` (exit code 2) naming the pip command.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# extra -> what it is for, as the error message says it.
EXTRAS = {
    'torch': 'reading PyTorch (.pth) weights and the PyTorch/timm parity checks',
    'prepare': 'preparing a TFDS dataset (TensorFlow)',
    'export-onnx': 'the ONNX export and its check (jax2onnx, onnxruntime)',
    'export-tflite': 'the TFLite export and its check (TensorFlow, LiteRT)',
}


class MissingExtraError(ImportError):
    """A package of an optional extra is not installed."""

    def __init__(self, extra: str, what: str, error: BaseException | None = None):
        found = f' ({type(error).__name__}: {error})' if error else ''
        super().__init__(
            f'{what} needs the optional extra {extra!r}, which is not '
            f"installed{found}. Install it: pip install 'ghostnet_jax[{extra}]'"
        )
        self.extra = extra


def require(module: str, extra: str, what: str | None = None) -> ModuleType:
    """`import module`, or MissingExtraError naming `extra`."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(extra, what or EXTRAS[extra].capitalize(), e) from e
