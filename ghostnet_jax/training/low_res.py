"""Low-resolution first epochs (`config.data.low_res`): more epochs in a fixed time.

The first `epochs_fraction` of a run's epochs train on batches downscaled to
`size` x `size` (after augmentation, so crops and flips are the full-size ones); the
rest, and every evaluation, use the full size. The network ends in global pooling,
so the same weights take either size. On the 2-core CPU a 24 x 24 step of
GhostNet-CIFAR 0.5x ran 1.79x faster than a 32 x 32 one (docs/training.md), so a timed
run fits more epochs; ending at full size lets BatchNorm statistics and the filters
settle at the size the model is evaluated on (the progressive resizing of fast
ImageNet recipes, in two stages to pay for one extra compile only).

Which epochs are small is a pure function of (epoch, num_epochs), so a resumed run
trains each epoch at the size an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any

# fraction * num_epochs is rounded as the exact product would be: 0.29 * 100 is 28.999...
# in floating point, and k / n * n can land just below k.
_ROUNDING_SLACK = 1e-9


def low_res_epochs(num_epochs: int, fraction: float) -> int:
    """How many of the first epochs of a `num_epochs` run train small: the fraction rounded
    down, at least one when it is > 0 (a time budget refits the length after epoch 1, and
    that epoch has been trained small), never more than the run has."""
    if fraction <= 0 or num_epochs <= 0:
        return 0
    return min(num_epochs, max(1, math.floor(fraction * num_epochs + _ROUNDING_SLACK)))


def low_res_epoch_choices(num_epochs: int, fraction: float) -> tuple[int, ...]:
    """The counts of small epochs a time budget may give a `num_epochs` run: the fraction
    rounded down, or up when that is another count. Rounding up is what the budget takes
    when the time left fits one more small epoch but not one more full-size one."""
    down = low_res_epochs(num_epochs, fraction)
    if not down:
        return (0,)
    up = min(num_epochs, max(1, math.ceil(fraction * num_epochs - _ROUNDING_SLACK)))
    return (down,) if up == down else (down, up)


def train_image_size(
    low_res: Any, epoch: int, num_epochs: int, small_epochs: int | None = None
) -> int | None:
    """The side length epoch `epoch` (0-based) trains at, or None for the full size.
    `low_res` is config.data.low_res (size 0 = off); `small_epochs`, when a time budget
    chose the count (its plan), replaces the fraction's."""
    if not low_res or not low_res.size:
        return None
    if small_epochs is None:
        small_epochs = low_res_epochs(num_epochs, low_res.epochs_fraction)
    return low_res.size if epoch < small_epochs else None
