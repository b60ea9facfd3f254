"""Data parallelism: a 1-D 'data' mesh over every device, and the step compiled two ways.

'jit'  : batch sharded over the mesh, state replicated; XLA inserts the gradient all-reduce
         and BatchNorm sees the global batch.
'pmap' : the same per-device step under `jax.pmap` with an explicit `pmean` over an axis
         name (BatchNorm uses the same name), for users who want the classic SPMD style.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ghostnet_jax.data.device import AXIS

log = logging.getLogger(__name__)

PMAP_AXIS = 'batch'
PARALLEL_MODES = ('jit', 'pmap')


def maybe_initialize_distributed(cfg) -> None:
    """Joins a multi-process run before any other JAX call.

    `cfg.enabled`: 'auto' initializes on Cloud TPU VMs (where JAX finds its peers itself),
    True always (with coordinator_address/num_processes/process_id when given), False never.
    """
    enabled = cfg.enabled
    on_tpu_vm = any(
        k in os.environ
        for k in ('TPU_WORKER_HOSTNAMES', 'CLOUD_TPU_TASK_ID', 'TPU_ACCELERATOR_TYPE')
    )
    if enabled is False or enabled == 'false' or (enabled == 'auto' and not on_tpu_vm):
        return
    kwargs = {}
    if cfg.coordinator_address:
        kwargs = dict(
            coordinator_address=cfg.coordinator_address,
            num_processes=cfg.num_processes,
            process_id=cfg.process_id,
        )
    jax.distributed.initialize(**kwargs)
    log.info(
        'Process %d of %d, %d local / %d global devices',
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named 'data' over all devices (or the first `num_devices`)."""
    devices = jax.devices() if num_devices is None else jax.devices()[:num_devices]
    return Mesh(np.asarray(devices), (AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a host or device pytree fully replicated on the mesh."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(
            np.shape(x), sharding, lambda idx: np.asarray(x)[idx]
        ),
        tree,
    )


class DataParallelStep:
    """The per-device step `step_fn(state, batch, axis_name=...)` compiled for `mode`.

    Callers hold a "carried" state: `put(state)` before the loop, `step(carried, batch)`
    each step, `get(carried)` for evaluation and checkpoints (a plain state replicated on
    the mesh). In jit mode carried == state; in pmap mode it has a leading device axis,
    kept across steps so that no step pays for stacking.
    """

    def __init__(self, step_fn: Callable, mesh: Mesh, mode: str):
        if mode not in PARALLEL_MODES:
            raise ValueError(f'parallel={mode!r}; valid choices: {", ".join(PARALLEL_MODES)}.')
        self.mesh, self.mode = mesh, mode
        if mode == 'jit':
            replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))
            self._step = jax.jit(
                functools.partial(step_fn, axis_name=None),
                in_shardings=(replicated, sharded),
                out_shardings=(replicated, replicated),
                donate_argnums=0,
            )
        else:
            self._devices = list(mesh.devices.flat)
            self._step = jax.pmap(
                functools.partial(step_fn, axis_name=PMAP_AXIS),
                axis_name=PMAP_AXIS,
                devices=self._devices,
                donate_argnums=0,
            )

    def put(self, state: Any) -> Any:
        if self.mode == 'jit':
            return state
        n = len(self._devices)
        # Stack on the host: a device array broadcast by jnp keeps the mesh's sharding,
        # which pmap rejects ("Sharding passed to jit does not match"); numpy it shards.
        host = jax.device_get(state)
        return jax.pmap(lambda x: x, devices=self._devices)(
            jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), host)
        )

    def get(self, carried: Any) -> Any:
        if self.mode == 'jit':
            return carried
        # Replicas are identical (updates are pmean'd); keep the first, placed on the mesh.
        return replicate(jax.device_get(jax.tree.map(lambda x: x[0], carried)), self.mesh)

    def step(self, carried: Any, batch: dict) -> tuple[Any, dict]:
        if self.mode == 'jit':
            return self._step(carried, batch)
        n = len(self._devices)
        split = jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)
        carried, metrics = self._step(carried, split)
        return carried, jax.tree.map(lambda x: x[0], metrics)
