"""Streamed train and eval data: splits larger than the devices' memory, read batch by
batch with Grain while the devices train.

The device-resident pipeline (``device.py``) keeps every split on the devices; this one
keeps nothing whole anywhere. Per epoch:

1. the epoch's permutation is the device pipeline's own (``epoch_keys``: a pure
   function of (seed, epoch)), computed on the host;
2. each process takes its columns of every global batch (the positions its devices
   hold under the 'data' mesh axis), so it reads only its rows, and the processes
   together read every example of the epoch's ``steps * B`` exactly once;
3. a Grain ``MapDataset`` maps those positions to decoded examples (``rows.ReadExample``:
   decode, resize or random-resized crop) and batches them; ``mp_prefetch`` runs that in
   ``workers`` processes (``threads`` threads each), whole batches per worker, so the
   order does not depend on the worker count;
4. a thread places each local batch on the devices with
   ``jax.make_array_from_process_local_data``, ``prefetch`` batches ahead;
5. the trainer's step gets it augmented and normalized by the same jitted code as the
   device pipeline (``device.batch_transform``) with the same key.

So for a split both pipelines can hold, (seed, epoch, step) gives the same images in the
same order, and bit-identical batches. The iterator's Grain state (``get_state``) after
each batch the trainer has taken is what a checkpoint saves (``StreamEpoch.state``); a
resumed epoch restores it (``set_state``). Because the batches are a pure function of
(seed, epoch, step), an epoch resumed without that state (a checkpoint of the device
pipeline, another worker or process count) starts at the same batch by its position.

Host memory: about ``workers * (threads + 1) + prefetch`` batches of decoded uint8 images
per process (plus the epoch's row order, 8 bytes per example), whatever the dataset size.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import queue
import threading
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ghostnet_jax.data.arrays import ArraySplit, ChannelSums, channel_sums
from ghostnet_jax.data.augment import AugmentConfig, normalize
from ghostnet_jax.data.device import AXIS, batch_transform, check_batch, epoch_keys
from ghostnet_jax.data.errors import BatchConfigError, DataError
from ghostnet_jax.data.placement import global_channel_stats
from ghostnet_jax.data.rows import ReadExample, Rows, View
from ghostnet_jax.data.sliced import LazySplit

log = logging.getLogger(__name__)

_STATE_VERSION = 1


class DataWorkerError(DataError):
    """A data worker process died (not an exception it could report): the message names
    the files of the batch it was preparing."""


@dataclasses.dataclass(frozen=True)
class StreamOptions:
    """How a split is streamed (config.data.stream, plus data.image_size)."""

    workers: int = 2  # decode processes (0: threads of this process)
    threads: int = 2  # batches read in parallel by each worker
    prefetch: int = 2  # batches placed on the devices ahead of the step
    image_size: int | None = None
    random_resized_crop: bool = False
    eval_crop_pct: float = 0.875
    stats_examples: int = 50_000  # rows the channel statistics are taken from, at most

    def __post_init__(self):
        for name in ('workers', 'threads'):
            if getattr(self, name) < 0:
                raise ValueError(f'data.stream.{name} must be >= 0, got {getattr(self, name)}.')
        if self.prefetch < 1:
            raise ValueError(f'data.stream.prefetch must be >= 1, got {self.prefetch}.')
        if self.random_resized_crop and not self.image_size:
            raise ValueError(
                'data.stream.random_resized_crop needs data.image_size (the crop side), e.g. 224.'
            )
        if not 0 < self.eval_crop_pct <= 1:
            raise ValueError(
                f'data.stream.eval_crop_pct must be in (0, 1], got {self.eval_crop_pct}.'
            )

    def shape(self, split: LazySplit) -> tuple[int, int, int]:
        """(H, W, C) of every streamed image."""
        c = int(split.image_shape[-1]) if len(split) else 3
        if self.image_size:
            return (self.image_size, self.image_size, c)
        return tuple(int(d) for d in split.image_shape)

    def view(self, split: LazySplit, train: bool) -> View:
        shape = self.shape(split)
        if not self.random_resized_crop:
            return View('resize', self.image_size, shape)
        mode = 'random_resized_crop' if train else 'centre_crop'
        return View(mode, self.image_size, shape, self.eval_crop_pct)


def process_columns(mesh: Mesh, global_batch_size: int) -> tuple[int, int]:
    """[lo, hi): the positions of every global batch that this process's devices hold."""
    index_map = NamedSharding(mesh, P(AXIS)).addressable_devices_indices_map((global_batch_size,))
    held = sorted({i for idx in index_map.values() for i in range(global_batch_size)[idx[0]]})
    lo, hi = held[0], held[-1] + 1
    if hi - lo != len(held):
        raise BatchConfigError(
            f'this process holds batch positions {held}, not one contiguous block: the streamed '
            "pipeline needs the 'data' mesh axis ordered by process (jax.devices() order)."
        )
    return lo, hi


def epoch_order(
    num_examples: int,
    global_batch_size: int,
    steps: int,
    seed: int,
    epoch: int,
    columns: tuple[int, int],
) -> np.ndarray:
    """(steps, hi - lo) rows this process reads in epoch ``epoch``: its columns of the
    device pipeline's permutation, reshaped to (steps, B)."""
    perm_key, _ = epoch_keys(seed, epoch)
    with jax.default_device(jax.local_devices(backend='cpu')[0]):
        perm = np.asarray(jax.random.permutation(perm_key, num_examples))
    lo, hi = columns
    return perm[: steps * global_batch_size].reshape(steps, global_batch_size)[:, lo:hi]


def grain_batches(
    rows: Rows, view: View, order: np.ndarray, options: StreamOptions, seed: int = 0, epoch: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """A Grain iterator over ``order`` (steps, L): batches of L decoded examples."""
    import grain  # a core dependency, imported where it is used (~0.2 s)

    steps, local = order.shape
    ds = grain.MapDataset.range(steps * local).map(
        ReadExample(rows, view, order.reshape(-1), seed, epoch)
    )
    ds = ds.batch(local, drop_remainder=True).to_iter_dataset(
        grain.ReadOptions(num_threads=options.threads, prefetch_buffer_size=options.threads)
    )
    if options.workers:
        from absl import flags

        if not flags.FLAGS.is_parsed():
            # Grain's workers read absl flags; a program that parses its own arguments
            # (the CLIs use argparse) leaves them unparsed, which Grain refuses.
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=options.workers, per_worker_buffer_size=1)
        )
    return iter(ds)


class _Placed:
    """A thread that takes local batches from a Grain iterator, places them on the devices
    as global arrays and queues ``prefetch`` of them ahead; ``get(k)`` returns batch k
    with the iterator's state after it."""

    def __init__(
        self,
        iterator,
        first: int,
        stop: int,
        mesh: Mesh,
        global_batch_size: int,
        prefetch: int,
        describe,
    ):
        self._iterator, self._describe = iterator, describe
        self._sharding = NamedSharding(mesh, P(AXIS))
        self._global_batch = global_batch_size
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(first, stop), daemon=True, name='ghostnet_jax stream'
        )
        self._thread.start()

    def _global(self, local: np.ndarray) -> jax.Array:
        shape = (self._global_batch,) + local.shape[1:]
        return jax.make_array_from_process_local_data(self._sharding, local, shape)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, first: int, stop: int) -> None:
        for k in range(first, stop):
            try:
                local = next(self._iterator)
                state = self._iterator.get_state()
                # Copied out of Grain's shared memory first: a CPU device may alias host
                # memory, and the segment is unlinked as soon as `local` is released.
                placed = {
                    key: self._global(np.array(local[key])) for key in ('image', 'label', 'mask')
                }
                item = (k, placed, state)
                del local
            except RuntimeError as e:
                if 'Worker process was terminated' not in str(e):
                    item = (k, e, None)
                else:
                    item = (
                        k,
                        DataWorkerError(
                            f'A data worker process died ({e}) while preparing batch {k} (or a '
                            'later '
                            f'one of its share); it reads {self._describe(k)}. A crash while '
                            'decoding usually means a damaged file or too little memory: check '
                            'those files, or lower data.stream.workers / data.stream.threads. '
                            'Nothing saved is lost: rerun to resume from the last checkpoint.'
                        ),
                        None,
                    )
            except BaseException as e:  # reported to the consumer, which raises it
                item = (k, e, None)
            if not self._put(item) or isinstance(item[1], BaseException):
                return

    def get(self, k: int) -> tuple[dict[str, jax.Array], Any]:
        got, placed, state = self._queue.get()
        if isinstance(placed, BaseException):
            raise placed
        if got != k:
            raise RuntimeError(
                f'the streamed batches are read in order: asked for {k}, next is {got}.'
            )
        return placed, state

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        close = getattr(self._iterator, 'close', None)
        if close:
            close()  # stops Grain's worker processes


class StreamEpoch:
    """One epoch of streamed batches from step ``first`` on; read in order, then closed."""

    def __init__(self, data: 'StreamTrainData', epoch: int, first: int, saved: dict | None):
        self.epoch, self.first = epoch, first
        self._data = data
        order = epoch_order(
            data.num_examples,
            data.global_batch_size,
            data.steps_per_epoch,
            data.seed,
            epoch,
            data.columns,
        )
        _, self.key = epoch_keys(data.seed, epoch)
        # The iterator covers the epoch from `start` (where the run's first process of this
        # epoch began it): a saved Grain state is a position in that iterator.
        start = saved['first'] if saved else first
        iterator = grain_batches(
            data.rows, data.view, order[start:], data.options, data.seed, epoch
        )
        grain_state = None
        if saved:
            iterator.set_state(saved['grain'])
            grain_state = saved['grain']
            log.info(
                'Streamed epoch %d resumes at step %d from its saved Grain iterator state.',
                epoch + 1,
                first,
            )
        lo, hi = data.columns
        # Shows (and tests check) that each process reads only its share of every batch.
        log.info(
            'Streamed epoch %d from step %d: this process reads columns %d..%d of every '
            'batch of %d (%d rows).',
            epoch + 1,
            first,
            lo,
            hi,
            data.global_batch_size,
            (data.steps_per_epoch - first) * (hi - lo),
        )
        self._start = start
        self._state = self._describe_state(first, grain_state)
        self._order = order
        self._placed = _Placed(
            iterator,
            first,
            data.steps_per_epoch,
            data.mesh,
            data.global_batch_size,
            data.options.prefetch,
            self._files,
        )

    @property
    def steps(self) -> int:
        return self._data.steps_per_epoch

    def _files(self, k: int) -> str:
        rows = self._order[k]
        names = [self._data.rows.describe(int(r)) for r in rows[:8]]
        more = f' and {len(rows) - 8} more' if len(rows) > 8 else ''
        return ', '.join(names) + more

    def _describe_state(self, step: int, grain_state: Any) -> dict:
        d = self._data
        return {
            'version': _STATE_VERSION,
            'epoch': self.epoch,
            'first': self._start,
            'step': step,
            'workers': d.options.workers,
            'num_examples': d.num_examples,
            'global_batch_size': d.global_batch_size,
            'columns': list(d.columns),
            'grain': grain_state,
        }

    def next_batch(self, step: int) -> dict[str, jax.Array]:
        placed, state = self._placed.get(step)
        self._state = self._describe_state(step + 1, state)
        return placed

    def state(self) -> dict:
        """What a checkpoint taken now saves: the Grain state after the last batch taken."""
        return self._state

    def close(self) -> None:
        self._placed.close()


def usable_state(saved: dict | None, expected: dict) -> bool:
    """Whether a checkpoint's iterator state continues this epoch as it is now set up
    (same epoch and step, same workers, batch, split size and process columns)."""
    if not saved or saved.get('version') != _STATE_VERSION or saved.get('grain') is None:
        return False
    return all(saved.get(k) == v for k, v in expected.items())


class StreamTrainData:
    """Shuffled, augmented training batches streamed from a split (same interface and,
    where both apply, same batches as ``DeviceTrainData``)."""

    def __init__(
        self,
        split: LazySplit,
        mesh: Mesh,
        global_batch_size: int,
        seed: int,
        augment: AugmentConfig,
        mean=None,
        std=None,
        dtype=jnp.float32,
        options: StreamOptions = StreamOptions(),
    ):
        check_batch(mesh, global_batch_size, f'training data {split.name}')
        n = len(split)
        if n < global_batch_size:
            raise BatchConfigError(
                f'training split {split.name} has {n} examples, fewer than one global batch of '
                f'{global_batch_size}; use a smaller batch size or a larger split.'
            )
        if split.rows is None:
            raise DataError(
                f"{split.name} cannot be streamed (no row reader); use data.pipeline='device'."
            )
        self.mesh, self.global_batch_size, self.num_examples = mesh, global_batch_size, n
        self.steps_per_epoch = n // global_batch_size
        self.seed, self.augment, self.options = seed, augment, options
        self.class_names = split.class_names
        self.rows, self.name = split.rows, split.name
        self.view = options.view(split, train=True)
        self.image_shape = options.shape(split)
        self.columns = process_columns(mesh, global_batch_size)
        if mean is None or std is None:
            mean, std = stream_channel_stats(split, options, mesh)
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        finish = batch_transform(augment, self.mean, self.std, dtype, len(self.class_names))
        self._finish = jax.jit(
            finish, out_shardings=NamedSharding(mesh, P(AXIS)), static_argnames='size'
        )

    def epoch(self, epoch: int, first: int = 0, state: dict | None = None) -> StreamEpoch:
        """Epoch ``epoch``'s batches from step ``first``; ``state``: the iterator state a
        checkpoint saved, used when it is this epoch's at this step."""
        expected = {
            'epoch': epoch,
            'step': first,
            'workers': self.options.workers,
            'num_examples': self.num_examples,
            'global_batch_size': self.global_batch_size,
            'columns': list(self.columns),
        }
        saved = state if usable_state(state, expected) else None
        if state and not saved and first:
            log.info(
                'Streamed epoch %d resumes at step %d by position (the saved iterator '
                'state is for another epoch, step or worker count).',
                epoch + 1,
                first,
            )
        return StreamEpoch(self, epoch, first, saved)

    def batch(
        self, epoch_batches: StreamEpoch, step: int, size: int | None = None
    ) -> dict[str, jax.Array]:
        """Batch ``step`` of the epoch, augmented and normalized on the devices; the steps
        of an epoch are read in order."""
        if not 0 <= step < epoch_batches.steps:
            raise IndexError(f'step {step} out of range [0, {epoch_batches.steps}).')
        if size is not None and not 0 < size <= min(self.image_shape[:2]):
            raise ValueError(f'size {size} must be in [1, {min(self.image_shape[:2])}].')
        placed = epoch_batches.next_batch(step)
        return self._finish(
            placed['image'], placed['label'], epoch_batches.key, jnp.int32(step), size=size
        )


class StreamEvalData:
    """Unaugmented eval batches streamed in split order, padded to whole batches with
    ``mask`` False on the padding (the interface of ``DeviceEvalData``)."""

    def __init__(
        self,
        split: LazySplit,
        mesh: Mesh,
        global_batch_size: int,
        mean,
        std,
        dtype=jnp.float32,
        options: StreamOptions = StreamOptions(),
    ):
        check_batch(mesh, global_batch_size, f'eval data {split.name}')
        n, b = len(split), global_batch_size
        self.mesh, self.global_batch_size, self.num_examples = mesh, b, n
        self.num_batches = math.ceil(n / b)
        self.class_names = split.class_names
        self.rows, self.options = split.rows, options
        self.view = options.view(split, train=False)
        lo, hi = process_columns(mesh, b)
        rows = np.arange(self.num_batches * b).reshape(self.num_batches, b)[:, lo:hi]
        self._order = np.where(rows < n, rows, -1)
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

        @functools.partial(jax.jit, out_shardings=NamedSharding(mesh, P(AXIS)))
        def finish(images, labels, mask):
            return {'image': normalize(images, mean, std, dtype), 'label': labels, 'mask': mask}

        self._finish = finish

    def _files(self, k: int) -> str:
        return ', '.join(self.rows.describe(int(r)) for r in self._order[k][:8] if r >= 0)

    def __iter__(self) -> Iterator[dict[str, jax.Array]]:
        iterator = grain_batches(self.rows, self.view, self._order, self.options)
        placed = _Placed(
            iterator,
            0,
            self.num_batches,
            self.mesh,
            self.global_batch_size,
            self.options.prefetch,
            self._files,
        )
        try:
            for k in range(self.num_batches):
                batch, _ = placed.get(k)
                yield self._finish(batch['image'], batch['label'], batch['mask'])
        finally:
            placed.close()


def stats_rows(num_examples: int, limit: int) -> np.ndarray:
    """The rows channel statistics are taken from: all of them, or ``limit`` evenly spaced."""
    if num_examples <= limit:
        return np.arange(num_examples)
    return np.unique(np.linspace(0, num_examples - 1, limit).round().astype(np.int64))


def stream_channel_stats(
    split: LazySplit, options: StreamOptions, mesh: Mesh
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean/std of the split as the network sees it (the eval view), from
    ``stats_rows``, each process summing its share: with every row taken (a split of at
    most ``options.stats_examples``), exactly the device pipeline's statistics."""
    rows = stats_rows(len(split), options.stats_examples)
    if len(rows) < len(split):
        log.info(
            '%s: channel mean/std from %d evenly spaced of its %d examples '
            '(data.stream.stats_examples; set data.mean/data.std to skip this).',
            split.name,
            len(rows),
            len(split),
        )
    mine = rows[jax.process_index() :: jax.process_count()]
    chunk = 64
    padded = np.full(math.ceil(len(mine) / chunk) * chunk, -1, np.int64)
    padded[: len(mine)] = mine
    order = padded.reshape(-1, chunk)
    sums = ChannelSums(
        np.zeros(options.shape(split)[-1], np.int64),
        np.zeros(options.shape(split)[-1], np.int64),
        0,
    )
    iterator = grain_batches(split.rows, options.view(split, train=False), order, options)
    try:
        for batch in iterator:
            sums = sums + channel_sums(np.asarray(batch['image'])[np.asarray(batch['mask'])])
    finally:
        close = getattr(iterator, 'close', None)
        if close:
            close()
    return global_channel_stats(sums)


def read_eval_split(split: LazySplit, options: StreamOptions) -> ArraySplit:
    """Every row of ``split`` through the eval view, in order, as one host array: for a
    small split that must be held whole (the end-of-run report shows its images)."""
    view = options.view(split, train=False)
    images, labels = [], []
    for row in range(len(split)):
        image, label = split.rows.read(row)
        images.append(view.apply(image, None, split.rows.describe(row)))
        labels.append(label)
    stacked = np.stack(images) if images else np.zeros((0,) + view.shape, np.uint8)
    return ArraySplit(stacked, np.asarray(labels, np.int32), split.class_names, split.name)
