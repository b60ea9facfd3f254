"""Training-step throughput of a registered model on this machine's devices.

    python -m ghostnet_jax.benchmark --model ghostnet_cifar_100 --batch-size 128 [--steps 20]

Runs the real train step (SGD, BN, dropout) under jit on synthetic device-resident data and
prints the median images/s over `--steps` timed steps after compilation (each step waited
for, so the median is a per-step time, not a pipelined average).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections

from ghostnet_jax.models import create_model, list_models
from ghostnet_jax.training import steps
from ghostnet_jax.training.optim import build_optimizer, default_optimizer_config
from ghostnet_jax.training.state import create_train_state, init_variables


def measure(model_name: str, batch_size: int, image_size: int, num_steps: int,
            dtype: str = 'float32', conv_impl: str = 'auto') -> dict:
    model = create_model(model_name, dtype=jnp.dtype(dtype), conv_impl=conv_impl)
    variables = init_variables(model, 0, (image_size, image_size, 3))
    opt_cfg = ml_collections.ConfigDict(default_optimizer_config())
    tx, schedule = build_optimizer(opt_cfg, 100, 10, variables['params'])
    state = create_train_state(variables, tx, 0.0)
    step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, schedule=schedule,
                                     seed=0), donate_argnums=0)
    batch = {'image': jax.random.normal(jax.random.key(1), (batch_size, image_size, image_size, 3),
                                        jnp.dtype(dtype)),
             'label': jnp.zeros((batch_size,), jnp.int32)}
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(num_steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {'model': model_name, 'batch_size': batch_size, 'conv_impl': conv_impl,
            'dtype': dtype, 'backend': jax.default_backend(),
            'compile_and_first_step_s': round(compile_s, 1),
            'median_step_s': round(median, 4), 'images_per_second': round(batch_size / median, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m ghostnet_jax.benchmark', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='ghostnet_cifar_100', choices=list_models())
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--image-size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
    parser.add_argument('--conv-impl', default='auto', choices=('auto', 'native', 'shifted'))
    args = parser.parse_args(argv)
    print(measure(args.model, args.batch_size, args.image_size, args.steps, args.dtype,
                  args.conv_impl))


if __name__ == '__main__':
    main()
