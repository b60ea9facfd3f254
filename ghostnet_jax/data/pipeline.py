"""Which input pipeline a run uses: ``data.pipeline = 'device' | 'stream' | 'auto'``.

``device`` (the default) keeps every split on the devices as uint8 and is the fastest
wherever the data fits (CIFAR-10: 150 MB). ``stream`` reads batches from disk with
Grain while the devices train, for data larger than the devices' memory, or images of
mixed sizes trained on random-resized crops. ``auto`` chooses ``device`` when the
splits' uint8 bytes fit ``data.stream.device_memory_share`` of one device's memory
(CPU devices: of the machine's RAM) and ``stream`` otherwise, and logs which and why.

The share is 1/4 by default because the device pipeline holds more than one copy: each
device keeps its shard of the split, and once an epoch the training split is gathered
whole onto every device to be shuffled; the model, optimizer state and activations need
the rest.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax

log = logging.getLogger(__name__)

PIPELINES = ('device', 'stream', 'auto')


@dataclasses.dataclass(frozen=True)
class Choice:
    pipeline: str  # 'device' or 'stream'
    reason: str


def device_memory(device: Any = None) -> tuple[int, str]:
    """(bytes, what) of one device's memory: the accelerator's limit, or the machine's RAM
    for CPU devices (which share it)."""
    device = device or jax.local_devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # some backends do not implement it
        stats = {}
    if stats.get('bytes_limit'):
        return int(stats['bytes_limit']), f"one {device.device_kind} device's memory"
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'), "this machine's RAM"


def split_bytes(split: Any, image_size: int | None) -> int:
    """uint8 bytes of a split as the device pipeline would hold it."""
    if split is None or not len(split):
        return 0
    h, w, c = split.image_shape
    if image_size:
        h = w = image_size
    return len(split) * h * w * c


def choose(
    pipeline: str,
    splits: Mapping[str, Any],
    image_size: int | None,
    share: float,
    random_resized_crop: bool = False,
    memory: tuple[int, str] | None = None,
) -> Choice:
    """The pipeline for these (lazily opened) splits, with the reason in words."""
    if pipeline not in PIPELINES:
        raise ValueError(f'data.pipeline={pipeline!r}; choose one of {", ".join(PIPELINES)}.')
    if pipeline != 'auto':
        return Choice(pipeline, f'data.pipeline={pipeline!r}')
    if random_resized_crop:
        return Choice(
            'stream',
            'data.stream.random_resized_crop needs the images at their own '
            'size, which only the streamed pipeline reads',
        )
    total = sum(split_bytes(s, image_size) for s in splits.values())
    limit, what = memory or device_memory()
    budget = share * limit
    gib = 2.0**30
    if total <= budget:
        return Choice(
            'device',
            f'the splits are {total / gib:.2f} GiB of uint8, within '
            f'{share:g} of {what} ({limit / gib:.1f} GiB)',
        )
    return Choice(
        'stream',
        f'the splits are {total / gib:.2f} GiB of uint8, more than '
        f'{share:g} of {what} ({limit / gib:.1f} GiB)',
    )
