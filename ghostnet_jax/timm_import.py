"""Importing timm beside a CPU-only torch, with or without torchvision.

timm imports torchvision at import time (data transforms, FrozenBatchNorm2d) but GhostNet
and MobileNetV3 use none of it. Without torchvision, a stub stands in for it during
`import timm` only; with a torchvision build that expects the `nms`/`qnms` operators a CPU
torch wheel lacks (seen with torch 2.13 CPU), their schemas are declared first. Used by
the PyTorch peer of the benchmark and by scripts/make_torch_parity_fixture.py.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any


class _Anything(type):
    """Metaclass for placeholders: any attribute is another distinct placeholder class."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith('__'):
            raise AttributeError(name)
        sub = _Anything(f'{cls.__name__}.{name}', (cls,), {})
        setattr(cls, name, sub)
        return sub


class _Placeholder(metaclass=_Anything):
    def __init__(self, *args: Any, **kwargs: Any):
        raise RuntimeError(f'{type(self).__name__} is a stub: torchvision is not installed.')


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith('__'):
            raise AttributeError(name)
        placeholder = _Anything(f'{self.__name__}.{name}', (_Placeholder,), {})
        setattr(self, name, placeholder)
        return placeholder


class _TorchvisionStubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves `torchvision` and all its submodules as stubs."""

    def find_spec(self, fullname, path, target=None):
        if fullname == 'torchvision' or fullname.startswith('torchvision.'):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def _forget_torchvision() -> None:
    for name in [m for m in sys.modules if m == 'torchvision' or m.startswith('torchvision.')]:
        del sys.modules[name]


def import_timm() -> types.ModuleType:
    """Imports timm on a CPU-only torch, with or without torchvision.

    timm imports torchvision at import time (data transforms, FrozenBatchNorm2d) but GhostNet
    uses none of it. Without torchvision, a stub stands in for it during `import timm` only
    (its classes end up in module-level tables and isinstance checks). With a torchvision
    build that expects the `nms`/`qnms` operators a CPU torch lacks, their schemas are
    declared first.
    """
    if 'timm' in sys.modules:
        return sys.modules['timm']
    import torch

    if importlib.util.find_spec('torchvision') is None:
        stub = _TorchvisionStubFinder()
        sys.meta_path.insert(0, stub)
        try:
            import timm
        finally:
            # Keep the stub from everything else in this process (e.g. a test session where
            # another test probes for torchvision); timm keeps the placeholders it took.
            sys.meta_path.remove(stub)
            _forget_torchvision()
        return timm
    try:
        import torchvision  # noqa: F401
    except RuntimeError as e:
        if 'torchvision::nms' not in str(e):
            raise
        _forget_torchvision()
        lib = torch.library.Library('torchvision', 'DEF')
        lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
        lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
        import_timm.torchvision_lib = lib  # The declarations live as long as this object.
    import timm

    return timm
