"""The PyTorch/timm peer: the identical CIFAR-stride GhostNet, trained eagerly, for a
side-by-side figure in the same process (`benchmark --compare-torch`, `torch` extra).

timm has no CIFAR variant; as in scripts/make_torch_parity_fixture.py, it is timm's
ghostnet_100 with the stem conv and the first stride-2 bottleneck (16 -> 48 -> 24) at
stride 1, which is exactly `ghostnet_cifar_100` (tests/test_convert.py checks the keys).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

from ghostnet_jax.timm_import import import_timm

# Our model -> the timm model that, with the CIFAR surgery below, is the same network.
TORCH_PEERS = {'ghostnet_cifar_100': 'ghostnet_100'}


def torch_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ('torch', 'timm'))


def require_torch() -> None:
    """MissingExtraError (with the install line) unless torch and timm are installed."""
    from ghostnet_jax.optional import require

    require('torch', 'torch', '--compare-torch (PyTorch)')
    require('timm', 'torch', '--compare-torch (timm)')


def timm_cifar_ghostnet(num_classes: int = 10):
    """timm's GhostNet 1.0x with CIFAR strides (stem and bottleneck 1 at stride 1)."""
    timm = import_timm()
    from timm.models.ghostnet import GhostBottleneck

    model = timm.create_model('ghostnet_100', pretrained=False, num_classes=num_classes)
    model.conv_stem.stride = (1, 1)
    model.blocks[1][0] = GhostBottleneck(16, 48, 24, 3, 1)
    return model


def torch_train_step(
    batch_size: int, image_size: int, threads: int | None = None, num_classes: int = 10
) -> tuple[Callable[[], None], dict]:
    """A callable running one eager SGD step (nesterov, weight decay, the default recipe's
    optimizer) on a fixed random batch, and a description of the setup."""
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)
    timm = import_timm()
    torch.manual_seed(0)
    model = timm_cifar_ghostnet(num_classes).train()
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = torch.randint(0, num_classes, (batch_size,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    info = {
        'torch': torch.__version__,
        'timm': timm.__version__,
        'threads': torch.get_num_threads(),
        'parameters': sum(p.numel() for p in model.parameters()),
    }
    return step, info
