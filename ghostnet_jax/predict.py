"""Classify image files with a trained run (or converted ImageNet weights).

    python -m ghostnet_jax.predict --workdir DIR IMAGE_OR_FOLDER... [--top-k 5]
        [--format text|json|csv] [--checkpoint best|latest|STEP] [--batch-size 32]
        [--skip-unreadable] [--verbose]

DIR is a training workdir, its checkpoints/ directory, one step directory, or the output
of `python -m ghostnet_jax.convert`. Each image is decoded, converted to the model's
channels and resized as the model was trained (see `ghostnet_jax.serving.preprocessing`);
folders are searched recursively for image files and read in batches, with a progress bar
on stderr when stderr is a terminal. Results go to stdout.

Exit codes: 0 ok, 1 unexpected, 2 usage, 4 data (unreadable image, nothing to read),
5 checkpoint. An unreadable image stops the run and is named, unless --skip-unreadable.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence, TextIO

from ghostnet_jax.data.errors import CorruptImageError, DataError
from ghostnet_jax.serving import cli

if TYPE_CHECKING:   # the real import pulls in jax: deferred to after argument checks
    from ghostnet_jax.serving import TrainedModel

PROG = 'python -m ghostnet_jax.predict'
IMAGE_SUFFIXES = frozenset({'.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp', '.tif', '.tiff',
                            '.ppm', '.pgm'})


class NoImagesError(DataError):
    """The inputs name no image files."""


def find_images(inputs: Sequence[str]) -> list[Path]:
    """Files as given (any name), folders searched recursively for image suffixes, in a
    stable order (sorted within each folder); a missing path is a DataError."""
    files: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob('*')
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith('.') for part in p.relative_to(path).parts))
            if not found:
                raise NoImagesError(f'{path} contains no image files (looked for '
                                    f'{", ".join(sorted(IMAGE_SUFFIXES))}, recursively).')
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise NoImagesError(f'{path} does not exist.')
    return files


class Progress:
    """A one-line bar on stderr, drawn only when stderr is a terminal (logs and pipes
    get no carriage-return clutter)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, enabled: bool | None = None):
        self.total, self.stream, self.done = total, stream, 0
        self.enabled = stream.isatty() if enabled is None else enabled
        self.start = time.perf_counter()
        self._drawn = 0   # length of the bar on screen, to erase it before results

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
        text = (f'[{"#" * filled}{"." * (width - filled)}] {self.done}/{self.total} images, '
                f'{rate:.1f} img/s')
        self.stream.write('\r' + text)
        self.stream.flush()
        self._drawn = len(text)

    def close(self) -> None:
        if self.enabled and self.done:
            self.stream.write('\n')
            self.stream.flush()


def _decode_batch(model: 'TrainedModel', paths: Sequence[Path], skip: bool,
                  pool: concurrent.futures.Executor) -> tuple[list, list, list]:
    """(paths, images, skipped (path, reason)) of one batch."""
    def one(p: Path):
        try:
            return model.preprocessing.load_image(p)
        except CorruptImageError as e:
            if not skip:
                raise
            return e
    kept, images, skipped = [], [], []
    for path, result in zip(paths, pool.map(one, paths)):
        if isinstance(result, Exception):
            skipped.append((path, str(result)))
        else:
            kept.append(path)
            images.append(result)
    return kept, images, skipped


def predict_files(model: 'TrainedModel', files: Sequence[Path], batch_size: int, top_k: int,
                  skip: bool, progress: Progress) -> Iterator[tuple[str, object]]:
    """Yields ('prediction', (path, [(index, name, p), ...])) and ('skipped', (path, why)).
    Decoding the next batch overlaps with predicting the current one."""
    import numpy as np
    batches = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
    threads = min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool, \
            concurrent.futures.ThreadPoolExecutor(1) as reader:
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


def _write(fmt: str, model: 'TrainedModel', events: Iterator, out: TextIO,
           err: TextIO, progress: Progress) -> tuple[int, int]:
    """Streams text/csv rows as they come; json is one document at the end."""
    n_ok = n_skipped = 0
    records, skipped = [], []
    writer = csv.writer(out, lineterminator='\n') if fmt == 'csv' else None
    if writer:
        writer.writerow(['path', 'rank', 'class_index', 'class_name', 'probability'])
    for kind, item in events:
        progress.clear()
        if kind == 'skipped':
            n_skipped += 1
            path, why = item
            print(f'{PROG}: skipped unreadable image {path}: {why}', file=err)
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
            records.append({'path': str(path), 'top_k': [
                {'class_index': index, 'class_name': name, 'probability': p}
                for index, name, p in top]})
    if fmt == 'json':
        json.dump({'model': model.spec.model_name, 'source': model.source, 'step': model.step,
                   'class_names': list(model.class_names), 'predictions': records,
                   'skipped': skipped}, out, indent=2)
        out.write('\n')
    return n_ok, n_skipped


def parse_checkpoint(text: str) -> str | int:
    if text in ('best', 'latest'):
        return text
    if text.isdigit():
        return int(text)
    raise cli.UsageError(f'--checkpoint must be best, latest or a step number, got {text!r}.')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('inputs', nargs='+', metavar='IMAGE_OR_FOLDER')
    p.add_argument('--workdir', required=True,
                   help='training workdir, checkpoints/ dir, step dir or convert output')
    p.add_argument('--checkpoint', default='best', help='best (default), latest or a step')
    p.add_argument('--top-k', type=int, default=5)
    p.add_argument('--format', choices=('text', 'json', 'csv'), default='text')
    p.add_argument('--batch-size', type=int, default=32, help='images decoded and run at once')
    p.add_argument('--skip-unreadable', action='store_true',
                   help='report unreadable images on stderr and go on (default: stop, exit 4)')
    p.add_argument('--progress', choices=('auto', 'always', 'never'), default='auto',
                   help='progress bar on stderr (auto: only when stderr is a terminal)')
    p.add_argument('--verbose', action='store_true', help='tracebacks for errors')
    return p


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = stdout or sys.stdout
    verbose = args.verbose or cli.verbose_requested(argv)
    if not verbose:   # orbax's read-only notices are not for someone classifying images
        logging.getLogger('absl').setLevel(logging.ERROR)

    def body() -> int:
        if args.top_k < 1:
            raise cli.UsageError(f'--top-k must be at least 1, got {args.top_k}.')
        if args.batch_size < 1:
            raise cli.UsageError(f'--batch-size must be at least 1, got {args.batch_size}.')
        which = parse_checkpoint(args.checkpoint)
        files = find_images(args.inputs)
        from ghostnet_jax.serving import load   # jax import: after the cheap checks
        max_batch = 1 << (args.batch_size - 1).bit_length()
        model = load(args.workdir, which, max_batch=max_batch)
        progress = Progress(len(files), enabled={'auto': None, 'always': True,
                                                 'never': False}[args.progress])
        try:
            n_ok, _ = _write(args.format, model,
                             predict_files(model, files, args.batch_size, args.top_k,
                                           args.skip_unreadable, progress),
                             out, sys.stderr, progress)
        finally:
            progress.close()
        out.flush()
        if n_ok == 0:
            raise NoImagesError(f'None of the {len(files)} images could be read.')
        return cli.EXIT_OK

    return cli.run(PROG, body, verbose)


if __name__ == '__main__':
    sys.exit(main())
