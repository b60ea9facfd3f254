"""Train step, evaluation, a real epoch and compile time, measured the way the trainer runs.

Everything is the trainer's own: a `Trainer` on the default config (the model, batch size,
dtype and conv formulation given), in a temporary workdir, whose compiled step is timed on
one fixed batch, whose `train_epoch_steps` (the one epoch loop, `training.epoch_loop`:
per-step batches, the in-flight bound, metrics fetched and written every
log_every_steps) is timed as a real epoch, and whose evaluator is timed on a validation
split. Only the images are synthetic (random uint8), so no dataset is needed.
"""

from __future__ import annotations

import dataclasses
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ghostnet_jax.configs.default import get_config
from ghostnet_jax.data import ArraySplit
from ghostnet_jax.training.environment import environment
from ghostnet_jax.training.metrics_log import Progress
from ghostnet_jax.training.state import eval_variables
from ghostnet_jax.training.trainer import Trainer

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
        out = {
            **self.settings,
            'train_images_per_sec': self.train_images_per_sec,
            # An epoch pays the mean step, slow ones included (docs/experiments.md: why a real
            # epoch is slower than the benchmark's step).
            'train_images_per_sec_mean': round(
                len(self.train_step_s) * self.settings['batch_size'] / sum(self.train_step_s), 1
            ),
            'eval_images_per_sec': self.eval_images_per_sec,
            'epoch_images_per_sec': self.epoch_images_per_sec,
            'compile_s': self.compile_s,
            'train_step_s': self.train_step_s,
            'epoch_s': self.epoch_s,
            'eval_s': self.eval_s,
            **self.env,
        }
        if self.eval_images_per_sec:
            out['eval_over_train'] = round(self.eval_images_per_sec / self.train_images_per_sec, 2)
        if self.epoch_images_per_sec:
            out['epoch_over_train'] = round(
                self.epoch_images_per_sec / self.train_images_per_sec, 3
            )
        if self.batch_s:
            out['batch_s'] = self.batch_s
            out['pipeline_over_step'] = round(
                statistics.median(self.batch_s) / statistics.median(self.train_step_s), 4
            )
        if self.profile is not None:
            out['profile'] = self.profile
        if self.torch is not None:
            out['torch'] = self.torch
        return out


def synthetic_split(
    num_examples: int, image_size: int, seed: int = 0, name: str = 'synthetic'
) -> ArraySplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_examples, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, (num_examples,), dtype=np.int32)
    return ArraySplit(images, labels, tuple(f'class_{i}' for i in range(NUM_CLASSES)), name)


def _block(tree: Any) -> None:
    jax.block_until_ready(tree)


def _interleaved(
    fns: dict[str, Callable[[], None]], rounds: int, steps_per_round: int
) -> dict[str, list[float]]:
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


def benchmark_config(
    model_name: str,
    batch_size: int,
    dtype: str,
    conv_impl: str,
    log_every_steps: int | None,
    eval_batch_size: int,
):
    """The default config with what the benchmark varies; 2 epochs (one warms up)."""
    config = get_config()
    config.model.name = model_name
    config.model.conv_impl = conv_impl
    config.batch_size = batch_size
    config.eval_batch_size = eval_batch_size
    config.dtype = dtype
    config.num_epochs = 2
    config.report = False
    config.log_every_steps = log_every_steps or config.log_every_steps
    config.checkpoint.async_save = False
    return config


def run_benchmark(
    model_name: str = 'ghostnet_cifar_100',
    batch_size: int = 128,
    image_size: int = 32,
    num_steps: int = 20,
    dtype: str = 'float32',
    conv_impl: str = 'auto',
    epoch_steps: int = 50,
    log_every_steps: int | None = None,
    eval_batch_size: int = 500,
    eval_batches: int = 4,
    profile_dir: str | None = None,
    compare_torch: bool = False,
    torch_threads: int | None = None,
    steps_per_round: int = 2,
) -> BenchmarkResult:
    """Measures one model; see the module docstring. `epoch_steps=0` / `eval_batches=0`
    skip the epoch / evaluation figures.

    The train step median is taken over `num_steps` steps, each waited for, on one fixed
    batch; with `compare_torch` the PyTorch steps are interleaved with them
    (`steps_per_round` of each in turn).
    """
    config = benchmark_config(
        model_name, batch_size, dtype, conv_impl, log_every_steps, eval_batch_size
    )
    settings = {
        'model': model_name,
        'batch_size': batch_size,
        'image_size': image_size,
        'dtype': dtype,
        'conv_impl': conv_impl,
        'steps': num_steps,
        'epoch_steps': epoch_steps,
        'log_every_steps': config.log_every_steps,
        'eval_batch_size': eval_batch_size,
        'eval_batches': eval_batches,
    }
    start = time.perf_counter()
    splits = {
        'train': synthetic_split(max(epoch_steps, 1) * batch_size, image_size),
        'val': synthetic_split(max(eval_batches, 1) * eval_batch_size, image_size, 1),
    }
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(config, workdir, splits=splits)
        # The run's first phases, as `Trainer.run` takes them: a fresh run of 2 epochs.
        trainer.restore_or_start()
        trainer.fit_length()
        trainer.record.open()
        trainer.progress = Progress(trainer.steps_per_epoch, 2, batch_size, stream=io.StringIO())
        data, runner = trainer.experiment.train_data, trainer.runner
        epoch0 = data.epoch(0)
        fixed_batch = data.batch(epoch0, 0)
        # A copy: the step donates its input, and the epochs below start from the state.
        carried = runner.put(jax.tree.map(lambda x: x.copy(), trainer.state))
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
            # call), timed interleaved with the steps: load drift between the step phase and
            # the epoch phase cannot distort this ratio the way it can distort epoch_over_train.
            contenders['batch'] = lambda: _block(data.batch(epoch0, 1 % data.steps_per_epoch))
            contenders['batch']()
        rounds = max(1, -(-num_steps // steps_per_round))
        times = _interleaved(contenders, rounds, steps_per_round)
        train_ips = batch_size / statistics.median(times['jax'])
        if compare_torch:
            torch_ips = batch_size / statistics.median(times['torch'])
            torch_info = {
                **torch_info,
                'images_per_sec': round(torch_ips, 1),
                'step_s': [round(t, 4) for t in times['torch']],
                'jax_over_torch': round(train_ips / torch_ips, 2),
            }

        result = BenchmarkResult(
            settings,
            round(train_ips, 1),
            [round(t, 4) for t in times['jax']],
            round(compile_s, 1),
            torch=torch_info,
        )
        if 'batch' in times:
            result.batch_s = [round(t, 5) for t in times['batch']]

        # --- profile of the same steady-state step.
        if profile_dir:
            from ghostnet_jax.benchmarking.profile import profile_step

            hlo = runner._step.lower(holder['carried'], fixed_batch).compile().as_text()
            result.profile = profile_step(jax_step, hlo, profile_dir)
        holder.clear()  # the last step's state, no longer needed

        # --- a real epoch: the trainer's own loop, its first epoch warming up.
        if epoch_steps:
            trainer.begin_training()
            epoch_s = 0.0
            for epoch in (0, 1):
                epoch_start = time.perf_counter()
                trainer.train_epoch_steps(epoch)
                _block(trainer.synced_state())
                epoch_s = time.perf_counter() - epoch_start
            result.epoch_s = round(epoch_s, 3)
            result.epoch_images_per_sec = round(data.steps_per_epoch * batch_size / epoch_s, 1)

        # --- evaluation with the trainer's Evaluator (one compiled step, summed counts).
        if eval_batches:
            eval_vars = eval_variables(trainer.synced_state())
            trainer.evaluate(eval_vars, trainer.experiment.val_data)  # compiles
            eval_times = []
            for _ in range(3):
                t = time.perf_counter()
                trainer.evaluate(eval_vars, trainer.experiment.val_data)  # fetches the counts
                eval_times.append(time.perf_counter() - t)
            result.eval_s = [round(t, 4) for t in eval_times]
            result.eval_images_per_sec = round(
                trainer.experiment.val_data.num_examples / statistics.median(eval_times), 1
            )
        trainer.record.close()
        trainer.ckpt.close()
    return result
