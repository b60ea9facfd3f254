"""Host throughput of the streamed input pipeline: images/s that Grain decodes, crops or
resizes and batches, per number of worker processes, before anything reaches a device.

The images are synthetic JPEGs written to a temporary folder (or a real folder given):
at 32, 32x32 images used at their size (CIFAR-10's case); at 224, photos of mixed sizes
around 500x375 (ImageNet's are 400x350 on average) as random-resized 224 crops (the
ImageNet recipe's case). The first batch of each run, which waits for the worker
processes to start, is timed separately (`first_batch_s`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ghostnet_jax.data.sliced import open_lazy_split
from ghostnet_jax.data.stream import StreamOptions, grain_batches

PHOTO_SIZES = ((375, 500), (500, 333), (333, 500), (480, 640), (256, 256))  # (H, W)


def write_images(folder: Path, side: int, count: int, seed: int = 0) -> Path:
    """`count` JPEGs in folder/train/{a,b}/: side x side (side < 64), else photo-sized;
    smooth random patterns (JPEG-compressible like photos, unlike pixel noise)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = (side, side) if side < 64 else PHOTO_SIZES[i % len(PHOTO_SIZES)]
        coarse = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        d = folder / 'train' / 'ab'[i % 2]
        d.mkdir(parents=True, exist_ok=True)
        image.save(d / f'{i:05d}.jpg', quality=90)
    return folder


def time_stream(
    source: str, size: int, workers: int, threads: int, batch_size: int, random_resized_crop: bool
) -> dict:
    """One pass over the split's whole batches with `workers` processes."""
    split = open_lazy_split(source, 'train', streamed=True, image_size=size)
    options = StreamOptions(
        workers=workers, threads=threads, image_size=size, random_resized_crop=random_resized_crop
    )
    steps = len(split) // batch_size
    if steps < 2:
        raise ValueError(
            f'{source} has {len(split)} images: at least 2 batches of '
            f'{batch_size} are needed to time the stream.'
        )
    order = np.random.default_rng(0).permutation(len(split))[: steps * batch_size]
    start = time.perf_counter()
    iterator = grain_batches(
        split.rows, options.view(split, train=True), order.reshape(steps, batch_size), options
    )
    try:
        next(iterator)
        first = time.perf_counter()
        for _ in range(steps - 1):
            next(iterator)
        end = time.perf_counter()
    finally:
        getattr(iterator, 'close', lambda: None)()
    return {
        'image_size': size,
        'workers': workers,
        'threads': threads,
        'batch_size': batch_size,
        'batches': steps - 1,
        'random_resized_crop': random_resized_crop,
        'images_per_sec': round((steps - 1) * batch_size / (end - first), 1),
        'first_batch_s': round(first - start, 2),
    }


def stream_throughput(
    workers: list[int],
    sizes: list[int],
    images: int = 512,
    batch_size: int = 64,
    threads: int = 2,
    source: str | None = None,
) -> list[dict]:
    """`time_stream` for every size and worker count, on synthetic JPEGs (or `source`,
    a folder:PATH whose train split is used at every size)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            src = source or f'folder:{write_images(Path(tmp) / str(size), size, images)}'
            for w in workers:
                rows.append(
                    time_stream(src, size, w, threads, batch_size, random_resized_crop=size >= 64)
                )
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = ['  stream (host: decode, crop/resize, batch), images/s by worker processes:']
    for r in rows:
        how = 'random-resized crop' if r['random_resized_crop'] else 'as stored'
        lines.append(
            f'    {r["image_size"]:>3}x{r["image_size"]:<3} {how:<19} workers '
            f'{r["workers"]}: {r["images_per_sec"]:>8} img/s (threads {r["threads"]}, '
            f'batch {r["batch_size"]}, first batch {r["first_batch_s"]} s)'
        )
    return '\n'.join(lines)
