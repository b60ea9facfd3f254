"""Classifying image files with a trained model: finding the files, decoding them in
threads while the previous batch runs, and writing the top-k classes as text, CSV or JSON
(what `python -m ghostnet_jax.predict` does).

Each image is decoded, converted to the model's channels and resized as the model was
trained (`ghostnet_jax.serving.preprocessing`); folders are searched recursively for image
files, in a stable order.
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence, TextIO

import numpy as np

from ghostnet_jax.data.errors import CorruptImageError, DataError
from ghostnet_jax.serving.loading import TrainedModel, load

IMAGE_SUFFIXES = frozenset(
    {'.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm', '.pgm'}
)


class NoImagesError(DataError):
    """The inputs name no image files."""


def find_images(inputs: Sequence[str]) -> list[Path]:
    """Files as given (any name), folders searched recursively for image suffixes, in a
    stable order (sorted within each folder); a missing path is a DataError."""
    files: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob('*')
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith('.') for part in p.relative_to(path).parts)
            )
            if not found:
                raise NoImagesError(
                    f'{path} contains no image files (looked for '
                    f'{", ".join(sorted(IMAGE_SUFFIXES))}, recursively).'
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise NoImagesError(f'{path} does not exist.')
    return files


class Progress:
    """A one-line bar on stderr, drawn only when stderr is a terminal (logs and pipes
    get no carriage-return clutter)."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool | None = None):
        # sys.stderr as it is now, not as it was at import (a caller may have replaced it).
        stream = sys.stderr if stream is None else stream
        self.total, self.stream, self.done = total, stream, 0
        self.enabled = stream.isatty() if enabled is None else enabled
        self.start = time.perf_counter()
        self._drawn = 0  # length of the bar on screen, to erase it before results

    def clear(self) -> None:
        """Erases the bar so that results printed to the same terminal start on a clean
        line; the next update draws it again below them."""
        if self.enabled and self._drawn:
            self.stream.write('\r' + ' ' * self._drawn + '\r')
            self.stream.flush()
            self._drawn = 0

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / max(1, self.total))
        rate = self.done / max(1e-9, time.perf_counter() - self.start)
        text = (
            f'[{"#" * filled}{"." * (width - filled)}] {self.done}/{self.total} images, '
            f'{rate:.1f} img/s'
        )
        self.stream.write('\r' + text)
        self.stream.flush()
        self._drawn = len(text)

    def close(self) -> None:
        if self.enabled and self.done:
            self.stream.write('\n')
            self.stream.flush()


def _decode_batch(
    model: TrainedModel, paths: Sequence[Path], skip: bool, pool: concurrent.futures.Executor
) -> tuple[list, list, list]:
    """(paths, images, skipped (path, reason)) of one batch."""

    def one(p: Path):
        try:
            return model.preprocessing.load_image(p)
        except CorruptImageError as e:
            if not skip:
                raise CorruptImageError(
                    f'{e} Nothing was classified. To classify the readable images and list '
                    'the unreadable ones, pass --skip-unreadable (Python: '
                    'skip_unreadable=True).'
                ) from e
            return e

    kept, images, skipped = [], [], []
    for path, result in zip(paths, pool.map(one, paths)):
        if isinstance(result, Exception):
            skipped.append((path, str(result)))
        else:
            kept.append(path)
            images.append(result)
    return kept, images, skipped


def predict_files(
    model: TrainedModel,
    files: Sequence[Path],
    batch_size: int,
    top_k: int,
    skip: bool,
    progress: Progress,
) -> Iterator[tuple[str, object]]:
    """Yields ('prediction', (path, [(index, name, p), ...])) and ('skipped', (path, why)).
    Decoding the next batch overlaps with predicting the current one."""
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    threads = min(8, os.cpu_count() or 1)
    with (
        concurrent.futures.ThreadPoolExecutor(threads) as pool,
        concurrent.futures.ThreadPoolExecutor(1) as reader,
    ):
        pending = reader.submit(_decode_batch, model, batches[0], skip, pool) if batches else None
        for i in range(len(batches)):
            kept, images, skipped = pending.result()
            if i + 1 < len(batches):
                pending = reader.submit(_decode_batch, model, batches[i + 1], skip, pool)
            for item in skipped:
                yield 'skipped', item
            if images:
                probs = model.predict(np.stack(images))
                for path, top in zip(kept, model.top_k(probs, top_k)):
                    yield 'prediction', (path, top)
            progress.update(len(batches[i]))


def _write(
    fmt: str, model: TrainedModel, events: Iterator, out: TextIO, err: TextIO, progress: Progress
) -> tuple[int, list[str]]:
    """Streams text/csv rows as they come; json is one document at the end. Returns the
    number classified and the unreadable paths."""
    n_ok = 0
    records, skipped = [], []
    writer = csv.writer(out, lineterminator='\n') if fmt == 'csv' else None
    if writer:
        writer.writerow(['path', 'rank', 'class_index', 'class_name', 'probability'])
    for kind, item in events:
        progress.clear()
        if kind == 'skipped':
            path, why = item
            print(f'skipped unreadable image {path}: {why}', file=err)
            skipped.append({'path': str(path), 'error': why})
            continue
        n_ok += 1
        path, top = item
        if fmt == 'text':
            ranked = ', '.join(f'{name} {p:.4f}' for _, name, p in top)
            out.write(f'{path}: {ranked}\n')
        elif fmt == 'csv':
            for rank, (index, name, p) in enumerate(top, 1):
                writer.writerow([str(path), rank, index, name, f'{p:.6g}'])
        else:
            records.append(
                {
                    'path': str(path),
                    'top_k': [
                        {'class_index': index, 'class_name': name, 'probability': p}
                        for index, name, p in top
                    ],
                }
            )
    if fmt == 'json':
        json.dump(
            {
                'model': model.spec.model_name,
                'source': model.source,
                'step': model.step,
                'class_names': list(model.class_names),
                'predictions': records,
                'skipped': skipped,
            },
            out,
            indent=2,
        )
        out.write('\n')
    return n_ok, [s['path'] for s in skipped]


def classify_files(
    path: str | os.PathLike,
    inputs: Sequence[str],
    which: str | int = 'best',
    *,
    top_k: int = 5,
    fmt: str = 'text',
    batch_size: int = 32,
    skip_unreadable: bool = False,
    progress: bool | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Classifies the image files and folders `inputs` with the model at `path` (see
    `load`), writing `fmt` rows to `out` (default stdout); returns how many images were
    classified. NoImagesError (a DataError) when there is nothing to classify; an
    unreadable image is a CorruptImageError naming it, unless `skip_unreadable`."""
    if top_k < 1:
        raise ValueError(f'top_k must be at least 1, got {top_k}.')
    if batch_size < 1:
        raise ValueError(f'batch_size must be at least 1, got {batch_size}.')
    out, err = out or sys.stdout, err or sys.stderr
    files = find_images(inputs)
    model = load(path, which, max_batch=1 << (batch_size - 1).bit_length())
    bar = Progress(len(files), enabled=progress)
    try:
        n_ok, unreadable = _write(
            fmt,
            model,
            predict_files(model, files, batch_size, top_k, skip_unreadable, bar),
            out,
            err,
            bar,
        )
    finally:
        bar.close()
    out.flush()
    if unreadable:  # the list once more at the end, where a user looks first
        print(
            f'{len(unreadable)} of {len(files)} images were unreadable and skipped: '
            f'{", ".join(unreadable)}',
            file=err,
        )
    if n_ok == 0:
        raise NoImagesError(f'None of the {len(files)} images could be read.')
    return n_ok
