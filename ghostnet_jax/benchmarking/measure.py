"""Train step, evaluation, a real epoch and compile time, measured the way the trainer runs.

Everything goes through the trainer's own pieces: the default config's optimizer and
augmentation, `steps.train_step` under `DataParallelStep`, `DeviceTrainData` for batches,
the trainer's `Evaluator` on `DeviceEvalData`, `MetricsWriter` and `Progress` for logging.
Only the images are synthetic (random uint8), so no dataset is needed.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ghostnet_jax.benchmarking.environment import environment
from ghostnet_jax.configs.default import get_config
from ghostnet_jax.data import ArraySplit, AugmentConfig, DeviceEvalData, DeviceTrainData
from ghostnet_jax.models import create_model
from ghostnet_jax.training import steps
from ghostnet_jax.training.metrics_log import MetricsWriter, Progress
from ghostnet_jax.training.optim import build_optimizer
from ghostnet_jax.training.parallel import DataParallelStep, make_mesh, replicate
from ghostnet_jax.training.state import create_train_state, eval_variables, init_variables
from ghostnet_jax.training.trainer import Evaluator

NUM_CLASSES = 10


@dataclasses.dataclass
class BenchmarkResult:
    """What `run_benchmark` measured; `as_dict()` is the `--json` document."""
    settings: dict
    train_images_per_sec: float
    train_step_s: list[float]
    compile_s: float
    epoch_images_per_sec: float | None = None
    epoch_s: float | None = None
    eval_images_per_sec: float | None = None
    eval_s: list[float] = dataclasses.field(default_factory=list)
    batch_s: list[float] = dataclasses.field(default_factory=list)
    profile: dict | None = None
    torch: dict | None = None
    env: dict = dataclasses.field(default_factory=environment)

    def as_dict(self) -> dict:
        out = {**self.settings,
               'train_images_per_sec': self.train_images_per_sec,
               # An epoch pays the mean step, slow ones included (README: why a real
               # epoch is slower than the benchmark's step).
               'train_images_per_sec_mean': round(
                   len(self.train_step_s) * self.settings['batch_size']
                   / sum(self.train_step_s), 1),
               'eval_images_per_sec': self.eval_images_per_sec,
               'epoch_images_per_sec': self.epoch_images_per_sec,
               'compile_s': self.compile_s,
               'train_step_s': self.train_step_s,
               'epoch_s': self.epoch_s,
               'eval_s': self.eval_s,
               **self.env}
        if self.eval_images_per_sec:
            out['eval_over_train'] = round(self.eval_images_per_sec / self.train_images_per_sec, 2)
        if self.epoch_images_per_sec:
            out['epoch_over_train'] = round(self.epoch_images_per_sec / self.train_images_per_sec, 3)
        if self.batch_s:
            out['batch_s'] = self.batch_s
            out['pipeline_over_step'] = round(
                statistics.median(self.batch_s) / statistics.median(self.train_step_s), 4)
        if self.profile is not None:
            out['profile'] = self.profile
        if self.torch is not None:
            out['torch'] = self.torch
        return out


def synthetic_split(num_examples: int, image_size: int, seed: int = 0,
                    name: str = 'synthetic') -> ArraySplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_examples, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, (num_examples,), dtype=np.int32)
    return ArraySplit(images, labels, tuple(f'class_{i}' for i in range(NUM_CLASSES)), name)


def _block(tree: Any) -> None:
    jax.block_until_ready(tree)


def _interleaved(fns: dict[str, Callable[[], None]], rounds: int,
                 steps_per_round: int) -> dict[str, list[float]]:
    """Per-call seconds of each function, alternating A A B B A A B B ... so that a busy
    machine's slow and fast phases fall on every contender alike.

    The first call after each switch is run untimed: it pays for the other framework's
    leftovers (PyTorch's OpenMP threads still spinning, caches and freed memory refilled).
    Measured with the PyTorch peer on 2 cores: JAX steps right after PyTorch's took
    3.2-4.9 s against 1.5-1.6 s for the next one, and PyTorch's own first step 1.2-1.5 s
    against 0.94-1.16 s; timing both would measure the switching, not either framework."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if len(fns) > 1:
                fn()
            for _ in range(steps_per_round):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def run_benchmark(model_name: str = 'ghostnet_cifar_100', batch_size: int = 128,
                  image_size: int = 32, num_steps: int = 20, dtype: str = 'float32',
                  conv_impl: str = 'auto', epoch_steps: int = 50,
                  log_every_steps: int | None = None, eval_batch_size: int = 500,
                  eval_batches: int = 4, profile_dir: str | None = None,
                  compare_torch: bool = False, torch_threads: int | None = None,
                  steps_per_round: int = 2) -> BenchmarkResult:
    """Measures one model; see the module docstring. `epoch_steps=0` / `eval_batches=0`
    skip the epoch / evaluation figures.

    The train step median is taken over `num_steps` steps, each waited for, on one fixed
    batch; with `compare_torch` the PyTorch steps are interleaved with them
    (`steps_per_round` of each in turn).
    """
    config = get_config()
    log_every = log_every_steps or config.log_every_steps
    settings = {'model': model_name, 'batch_size': batch_size, 'image_size': image_size,
                'dtype': dtype, 'conv_impl': conv_impl, 'steps': num_steps,
                'epoch_steps': epoch_steps, 'log_every_steps': log_every,
                'eval_batch_size': eval_batch_size, 'eval_batches': eval_batches}
    compute_dtype = jnp.dtype(dtype)
    start = time.perf_counter()

    # --- setup exactly as the trainer does it, up to the first finished step.
    mesh = make_mesh()
    a = config.data.augment
    augment = AugmentConfig(crop_padding=a.crop_padding, padding_mode=a.padding_mode,
                            flip=a.flip, cutout=a.cutout)
    train_data = DeviceTrainData(
        synthetic_split(max(epoch_steps, 1) * batch_size, image_size), mesh, batch_size,
        config.seed, augment, dtype=compute_dtype)
    model = create_model(model_name, num_classes=NUM_CLASSES,
                         dropout_rate=config.model.dropout_rate, conv_impl=conv_impl,
                         dtype=compute_dtype)
    variables = init_variables(model, config.seed, (image_size, image_size, 3))
    tx, schedule = build_optimizer(config.optimizer, train_data.steps_per_epoch,
                                   config.num_epochs, variables['params'])
    state = replicate(create_train_state(variables, tx, config.ema_decay), mesh)
    step_fn = functools.partial(
        steps.train_step, model=model, tx=tx, schedule=schedule, seed=config.seed,
        label_smoothing=config.label_smoothing, ema_decay=config.ema_decay)
    runner = DataParallelStep(step_fn, mesh, config.parallel)
    epoch0 = train_data.epoch(0)
    fixed_batch = train_data.batch(epoch0, 0)
    carried = runner.put(state)
    carried, metrics = runner.step(carried, fixed_batch)
    _block(metrics)
    compile_s = time.perf_counter() - start

    # --- steady-state step (optionally interleaved with the PyTorch peer).
    holder = {'carried': carried}

    def jax_step() -> None:
        holder['carried'], m = runner.step(holder['carried'], fixed_batch)
        _block(m)

    jax_step()  # a second warm-up: the first call after compile can still allocate
    contenders = {'jax': jax_step}
    torch_info = None
    if compare_torch:
        from ghostnet_jax.benchmarking.torch_peer import torch_train_step
        torch_step, torch_info = torch_train_step(batch_size, image_size, torch_threads)
        torch_step()
        contenders['torch'] = torch_step
    if epoch_steps:
        # The input pipeline's own per-step work (slice, crop, flip, normalize: one jitted
        # call), timed interleaved with the steps: load drift between the step phase and the
        # epoch phase cannot distort this ratio the way it can distort epoch_over_train.
        contenders['batch'] = lambda: _block(train_data.batch(epoch0, 1 % train_data.steps_per_epoch))
        contenders['batch']()
    rounds = max(1, -(-num_steps // steps_per_round))
    times = _interleaved(contenders, rounds, steps_per_round)
    train_ips = batch_size / statistics.median(times['jax'])
    if compare_torch:
        torch_ips = batch_size / statistics.median(times['torch'])
        torch_info = {**torch_info, 'images_per_sec': round(torch_ips, 1),
                      'step_s': [round(t, 4) for t in times['torch']],
                      'jax_over_torch': round(train_ips / torch_ips, 2)}

    result = BenchmarkResult(settings, round(train_ips, 1), [round(t, 4) for t in times['jax']],
                             round(compile_s, 1), torch=torch_info)
    if 'batch' in times:
        result.batch_s = [round(t, 5) for t in times['batch']]

    # --- profile of the same steady-state step.
    if profile_dir:
        from ghostnet_jax.benchmarking.profile import profile_step
        hlo = runner._step.lower(holder['carried'], fixed_batch).compile().as_text()
        result.profile = profile_step(jax_step, hlo, profile_dir)

    # --- one epoch as the trainer runs it: reshuffle, per-step batches, metrics fetched
    # and written every `log_every` steps, progress line, final flush.
    if epoch_steps:
        carried = holder['carried']
        with tempfile.TemporaryDirectory() as workdir, MetricsWriter(workdir) as writer:
            progress = Progress(train_data.steps_per_epoch, 2, batch_size, stream=io.StringIO())
            for epoch in (1, 2):   # epoch 1 compiles nothing new but warms the gather
                epoch_start = time.perf_counter()
                progress.start_epoch(epoch)
                batches = train_data.epoch(epoch)
                pending, last = [], {}
                for k in range(train_data.steps_per_epoch):
                    carried, metrics = runner.step(carried, train_data.batch(batches, k))
                    pending.append(metrics)
                    if len(pending) >= log_every or k + 1 == train_data.steps_per_epoch:
                        fetched = jax.device_get(pending)
                        first = epoch * train_data.steps_per_epoch + k + 1 - len(fetched)
                        for i, m in enumerate(fetched):
                            writer.write_scalars(first + i, m, 'train', epoch=epoch)
                        pending, last = [], fetched[-1]
                    progress.update(k + 1, last)
                _block(carried)
                epoch_s = time.perf_counter() - epoch_start
        result.epoch_s = round(epoch_s, 3)
        result.epoch_images_per_sec = round(
            train_data.steps_per_epoch * batch_size / epoch_s, 1)
        holder['carried'] = carried

    # --- evaluation with the trainer's Evaluator (one compiled step, summed counts).
    if eval_batches:
        eval_data = DeviceEvalData(synthetic_split(eval_batches * eval_batch_size, image_size, 1),
                                   mesh, eval_batch_size, train_data.mean, train_data.std,
                                   dtype=compute_dtype)
        evaluator = Evaluator(model, NUM_CLASSES)
        eval_vars = eval_variables(runner.get(holder['carried']))
        evaluator(eval_vars, eval_data)   # compiles
        eval_times = []
        for _ in range(3):
            t = time.perf_counter()
            evaluator(eval_vars, eval_data)   # summarize() fetches the counts: a full sync
            eval_times.append(time.perf_counter() - t)
        result.eval_s = [round(t, 4) for t in eval_times]
        result.eval_images_per_sec = round(
            eval_data.num_examples / statistics.median(eval_times), 1)
    return result
