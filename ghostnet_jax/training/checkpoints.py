"""Orbax checkpoints in `<workdir>/checkpoints/<step>/` with latest-k + best retention.

Layout of a step directory (also what `load_variables` accepts from a PyTorch converter):
  state/    the train-state pytree (ocp StandardSave); holds at least params, batch_stats
  host/     JSON host state: epoch, step, callbacks' state_dicts, rng seed, metrics ...
  data/     streamed runs only: each process's input-iterator state (Grain's checkpoint
            handler, one process_<i>-of-<n>.json per process)
  metrics/  written by orbax: the metrics dict given to save(), used to rank "best"

Retention (one CheckpointManager, one directory): a step is kept if it is among the
latest `max_to_keep` OR among the `keep_best` best by `best_metric` (`best_mode`).
Both are orbax PreservationPolicies combined with AnyPreservationPolicy, so the best
step is never deleted by the latest-k rule, and because orbax re-reads each step's
`metrics/` on start-up the best is still known (and kept) after a resume. A step saved
without the metric is governed by latest-k only.

Config (`config.checkpoint`; every field with its default in configs/default.py):
  every_epochs   save after every N-th epoch (and always after the last one)
  every_steps    also save inside epochs, every N steps of the run (0 = off; long epochs)
  max_to_keep    latest k steps kept
  keep_best      best steps kept in addition (0 = off)
  best_metric    key of the metrics dict passed to save(), e.g. 'val_accuracy'
  best_mode      'max' or 'min'
  async_save     orbax async save (the train loop continues while files are written)
  save_timeout_s how long a background save may take before it counts as failed; 0: no
                 limit in a one-process run (a suspended process, a slow disk or bucket is
                 waited for), orbax's 20 minutes in a multi-process run (its hosts meet at
                 a barrier, which needs a deadline). A failed save is a warning: the
                 previous checkpoint stays, the next save is tried (`failed_save`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as ocm

log = logging.getLogger(__name__)

STATE, HOST, DATA = 'state', 'host', 'data'
_TMP = re.compile(r'^(\d+)\.orbax-checkpoint-tmp')


# A one-process run waits for its background save however long it takes: orbax's deadline
# (20 minutes of wall time) also runs while the process is stopped (Ctrl-Z, a laptop's
# sleep, `docker pause`), and a save it abandons is never finalized. Ten years, as orbax
# needs a number.
NO_DEADLINE_S = 10 * 365 * 24 * 3600
MULTI_PROCESS_DEADLINE_S = ocp.AsyncOptions().timeout_secs


def save_deadline_s(save_timeout_s: float, process_count: int) -> int:
    """The background-save deadline orbax gets (`save_timeout_s` 0: the default above)."""
    if save_timeout_s and save_timeout_s > 0:
        return max(1, int(math.ceil(save_timeout_s)))
    return NO_DEADLINE_S if process_count == 1 else MULTI_PROCESS_DEADLINE_S


# A save whose metrics hold BEST_MARK=1 is a new best by the caller's own rule (the
# training loop's, which may differ from plain ranking, e.g. early stopping's min_delta).
BEST_MARK = 'is_new_best'


@dataclasses.dataclass
class _LastMarkedBest:
    """Orbax preservation policy: keeps the last `n` checkpoints saved with BEST_MARK.
    Bests only move forward in time, so the last marked step is the current best."""

    n: int

    def should_preserve(self, checkpoints, *, context=None) -> list[bool]:
        marked = [c.step for c in checkpoints if (c.metrics or {}).get(BEST_MARK)]
        keep = set(sorted(marked)[-self.n :])
        return [c.step in keep for c in checkpoints]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or would be overwritten."""


def _listing(path: Path) -> str:
    """What exists at `path`, or at its nearest existing parent, for error messages."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    entries = (
        sorted(x.name + ('/' if x.is_dir() else '') for x in p.iterdir()) if p.is_dir() else []
    )
    return f'{p} contains {entries if entries else "nothing"}'


def _tmp_dirs(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _TMP.match(p.name))


def _warn_tmp(directory: Path, using: int | None) -> None:
    for p in _tmp_dirs(directory):
        log.warning(
            'Ignoring half-written checkpoint %s (a save was interrupted); using %s instead.',
            p,
            f'step {using}' if using is not None else 'no checkpoint',
        )


def abstract_state(tree: Any, mesh: jax.sharding.Mesh | None = None) -> Any:
    """Arrays / ShapeDtypeStructs -> ShapeDtypeStructs for an orbax restore target.

    With `mesh`, every leaf is replicated over it (NamedSharding(mesh, P())); otherwise a
    leaf keeps its own sharding (None lets orbax pick). Non-array leaves pass through.
    """
    replicated = (
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()) if mesh is not None else None
    )

    def one(x):
        if not hasattr(x, 'shape') or not hasattr(x, 'dtype'):
            return x
        sharding = replicated or getattr(x, 'sharding', None)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(one, tree)


def _jsonable(x: Any) -> Any:
    """numpy/jax scalars -> Python; validated here so errors surface before the async save."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.ndarray, np.generic, jax.Array)):
        return np.asarray(x).tolist()
    return x


class Checkpointer:
    """Wraps `ocp.CheckpointManager`; use as a context manager or call close()."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        every_epochs: int = 1,
        max_to_keep: int = 3,
        keep_best: int = 1,
        best_metric: str = 'val_accuracy',
        best_mode: str = 'max',
        async_save: bool = True,
        every_steps: int = 0,
        save_timeout_s: float = 0,
        read_only: bool = False,
        iterator_state: bool = False,
    ):
        """`every_steps` (> 0): the trainer also saves inside epochs, every that many steps
        (checkpoint.every_steps); `iterator_state`: steps may carry a `data/` item, the
        streamed pipeline's iterator state (Grain's own checkpoint handler writes it)."""
        if best_mode not in ('max', 'min'):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        # Orbax writes gs:// itself; epath keeps such paths intact (pathlib would mangle them).
        base = epath.Path(workdir) if '://' in str(workdir) else Path(workdir).absolute()
        self.directory = base / 'checkpoints'
        if read_only and not self.directory.is_dir():
            raise CheckpointError(
                f'No checkpoint directory {self.directory}; {_listing(self.directory)}'
            )
        self.every_epochs, self.best_metric, self.best_mode = (
            int(every_epochs),
            best_metric,
            best_mode,
        )
        self.every_steps = int(every_steps or 0)
        self._iterator_state = iterator_state
        worst = -math.inf if best_mode == 'max' else math.inf

        def metric_fn(metrics: Mapping[str, Any]) -> float:
            v = float(metrics.get(best_metric, worst))
            return worst if math.isnan(v) else v

        policies: list[Any] = [ocm.LatestN(n=max_to_keep)]
        if keep_best > 0:
            policies.append(_LastMarkedBest(n=keep_best))
            policies.append(
                ocm.BestN(
                    get_metric_fn=metric_fn,
                    reverse=best_mode == 'min',
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            best_fn=metric_fn,  # only for best_step(); retention is the policy above
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
            async_options=ocp.AsyncOptions(
                timeout_secs=save_deadline_s(save_timeout_s, jax.process_count())
            ),
            read_only=read_only,
            create=not read_only,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            handler_registry=self._registry(iterator_state),
        )
        self._in_flight: int | None = None  # the step whose background save may still fail
        self._failed: list[int] = []  # steps whose background save failed
        _warn_tmp(self.directory, self._manager.latest_step())

    @staticmethod
    def _registry(iterator_state: bool = False) -> ocp.handlers.DefaultCheckpointHandlerRegistry:
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        registry.add(STATE, ocp.args.StandardSave, ocp.StandardCheckpointHandler())
        registry.add(STATE, ocp.args.StandardRestore, ocp.StandardCheckpointHandler())
        registry.add(HOST, ocp.args.JsonSave, ocp.JsonCheckpointHandler())
        registry.add(HOST, ocp.args.JsonRestore, ocp.JsonCheckpointHandler())
        if iterator_state:  # only streamed runs import Grain
            import grain.checkpoint

            registry.add(
                DATA, grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointHandler()
            )
            registry.add(
                DATA, grain.checkpoint.CheckpointRestore, grain.checkpoint.CheckpointHandler()
            )
        return registry

    @classmethod
    def from_config(
        cls, workdir: str | Path, cfg: ml_collections.ConfigDict, **kwargs: Any
    ) -> 'Checkpointer':
        return cls(workdir, **{**cfg.to_dict(), **kwargs})

    # ------------------------------------------------------------------ queries
    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The last step saved with metric `BEST_MARK` (the training loop marks each save
        that is a new best by its own rule); else the best by `best_metric` among steps
        saved with it; None if there is neither."""
        steps = self.all_steps()
        marked = [s for s in steps if (self._manager.metrics(s) or {}).get(BEST_MARK)]
        if marked:
            return marked[-1]
        scored = [
            s for s in steps if (self._manager.metrics(s) or {}).get(self.best_metric) is not None
        ]
        return self._manager.best_step() if scored else None

    def should_save(self, epoch: int, num_epochs: int) -> bool:
        """`epoch` is 1-based (epochs completed); the last epoch is always saved."""
        return epoch % self.every_epochs == 0 or epoch == num_epochs

    # --------------------------------------------------------------------- save
    def save(
        self,
        step: int,
        state: Any,
        host_state: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        iterator_state: Mapping[str, Any] | None = None,
    ) -> None:
        """Starts an (async) save of `state` + `host_state` as checkpoint `step`.

        Raises CheckpointError if `step` already exists: nothing saved is overwritten.
        `metrics` ranks the step for the best-k policy (needs `best_metric` in it).
        `iterator_state`: this process's input-iterator state (JSON), saved by Grain's
        checkpoint handler as `data/process_<i>-of-<n>.json` (needs iterator_state=True).
        """
        step = int(step)
        if step in self.all_steps() or (self.directory / str(step)).exists():
            raise CheckpointError(
                f'Refusing to overwrite existing checkpoint {self.directory / str(step)}. '
                'Resume from the latest checkpoint or use a new workdir.'
            )
        host = _jsonable(host_state)
        json.dumps(host)  # fail here, not in orbax's background thread (NaN is allowed)
        orbax_metrics = None
        if metrics is not None and (
            metrics.get(self.best_metric) is not None or metrics.get(BEST_MARK)
        ):
            orbax_metrics = {
                k: float(v) for k, v in _jsonable(metrics).items() if isinstance(v, (int, float))
            }
        items = {STATE: ocp.args.StandardSave(state), HOST: ocp.args.JsonSave(host)}
        if iterator_state is not None and self._iterator_state:
            import grain.checkpoint

            # A snapshot taken now: the live iterator has read ahead of the trained steps.
            items[DATA] = grain.checkpoint.CheckpointSave(
                _saved_iterator(_jsonable(iterator_state))
            )
        self.failed_save(wait=True)  # a failure of the previous save is a warning, not this save's
        self._manager.save(
            step,
            args=ocp.args.Composite(**items),
            metrics=orbax_metrics,
            force=True,  # the epoch cadence is decided by should_save(), not by orbax
        )
        self._in_flight = step

    def failed_save(self, wait: bool = False) -> int | None:
        """The step of the last save if it failed in the background (a deadline passed, the
        storage failed), else None; a save still in flight counts only with `wait`. A failed
        save is reported once, as a warning: its unfinished files are removed, the
        previous checkpoint stays, and the caller decides whether to save again."""
        step = self._in_flight
        if step is None or (not wait and self._manager.is_saving_in_progress()):
            return None
        self._in_flight = None
        try:
            self._manager.wait_until_finished()  # raises the background error, once
        except Exception as e:  # orbax and tensorstore raise many types
            kept = self.latest_step()
            log.warning(
                'The checkpoint of step %d could not be finished (%s: %s); %s. Training '
                'goes on and saves again (its unfinished files are removed at the end).',
                step,
                type(e).__name__,
                str(e)[:300],
                f'the previous one, step {kept}, is kept'
                if kept is not None
                else 'no earlier checkpoint exists',
            )
            self._failed.append(step)
            return step
        return None

    def _remove_failed(self) -> None:
        """The unfinished files of this process's failed saves, once nothing writes them
        (their writes may outlive the failure: a deadline does not stop them)."""
        if jax.process_index() == 0:
            for tmp in _tmp_dirs(self.directory):
                if int(_TMP.match(tmp.name).group(1)) in self._failed:
                    shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ restore
    def _resolve(self, which: str | int) -> int:
        steps = self.all_steps()
        if not steps:
            _warn_tmp(self.directory, None)
            raise CheckpointError(
                f'No finished checkpoint in {self.directory}; {_listing(self.directory)}'
            )
        if which == 'latest':
            step = steps[-1]
        elif which == 'best':
            step = self.best_step()
            if step is None:
                raise CheckpointError(
                    f'No checkpoint in {self.directory} was saved with metric '
                    f'{self.best_metric!r}; steps: {steps}'
                )
        elif isinstance(which, (int, np.integer)) and not isinstance(which, bool):
            step = int(which)
            if step not in steps:
                raise CheckpointError(
                    f'No checkpoint for step {step} in {self.directory}; available steps: {steps}'
                )
        else:
            raise ValueError(f"which must be 'latest', 'best' or a step number, got {which!r}")
        return step  # interrupted (tmp) saves were already reported by __init__

    def restore(
        self, target: Any, which: str | int = 'latest', mesh: jax.sharding.Mesh | None = None
    ) -> tuple[Any, dict]:
        """Restores (state, host_state). `target` is a concrete or abstract state; it is
        always turned into an abstract target so optax NamedTuples keep their types and
        arrays get the target's shardings (or replicated over `mesh`)."""
        self.wait_until_finished()  # a step saved by this process may still be in flight
        step = self._resolve(which)
        path = self.directory / str(step)
        missing = [name for name in (STATE, HOST) if not (path / name).is_dir()]
        try:
            if missing:
                raise FileNotFoundError(f'missing item directories {missing}')
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    **{
                        STATE: ocp.args.StandardRestore(abstract_state(target, mesh)),
                        HOST: ocp.args.JsonRestore(),
                    }
                ),
            )
        except Exception as e:  # orbax/tensorstore raise many types; all mean "unreadable"
            older = [s for s in self.all_steps() if s < step]
            hint = (
                f' Try an older one with --checkpoint {older[-1]} (available: {older}).'
                if older
                else ''
            )
            raise CheckpointError(
                f'Checkpoint {path} is damaged or does not match the model/optimizer: '
                f'{type(e).__name__}: {str(e)[:500]}.{hint}'
            ) from e
        return restored[STATE], dict(restored[HOST])

    def restore_latest_intact(
        self, target: Any, mesh: jax.sharding.Mesh | None = None
    ) -> tuple[Any, dict]:
        """Restores the latest checkpoint that reads back. A damaged one (truncated file,
        corrupt array, missing item) is moved aside to `<step>.damaged-<time>` (kept, never
        deleted) with a warning, and the previous step is tried."""
        while True:
            step = self.latest_step()
            try:
                return self.restore(target, step, mesh=mesh)
            except CheckpointError as e:
                if not [s for s in self.all_steps() if s < step]:
                    raise
                aside = self.directory / f'{step}.damaged-{time.strftime("%Y%m%d-%H%M%S")}'
                log.warning(
                    'Checkpoint %s is damaged (%s); moved it to %s and resuming from the '
                    'previous one.',
                    self.directory / str(step),
                    str(e)[:300],
                    aside,
                )
                self._set_aside(step, aside)

    def _set_aside(self, step: int, aside: Any) -> None:
        if jax.process_index() == 0:
            (self.directory / str(step)).rename(aside)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f'ghostnet_jax set aside checkpoint {step}')
        self._manager.reload()

    def read_iterator_state(self, step: int) -> dict | None:
        """This process's input-iterator state saved with `step` (see `save`), or None:
        none saved (a device-resident run's checkpoint) or none for this process count."""
        if not self._iterator_state or not (self.directory / str(step) / DATA).is_dir():
            return None
        import grain.checkpoint

        box = _saved_iterator(None)
        try:
            self._manager.restore(
                step, args=ocp.args.Composite(**{DATA: grain.checkpoint.CheckpointRestore(box)})
            )
        except Exception as e:  # e.g. saved by another number of processes
            log.info(
                'Checkpoint %s: no input-iterator state for this process (%s); the '
                'streamed epoch resumes by position.',
                step,
                str(e)[:200],
            )
            return None
        return box.saved

    def read_host(self, which: str | int = 'latest') -> tuple[int, dict]:
        """(step, host JSON) of a checkpoint without reading its arrays: what `evaluate`,
        `load` and `predict` need to rebuild the model (its `model_spec`)."""
        self.wait_until_finished()
        step = self._resolve(which)
        path = self.directory / str(step)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{HOST: ocp.args.JsonRestore()})
            )
        except Exception as e:
            raise CheckpointError(
                f'Checkpoint {path} has no readable host state: {type(e).__name__}: {str(e)[:300]}'
            ) from e
        return step, dict(restored[HOST])

    # ---------------------------------------------------------------- lifecycle
    def wait_until_finished(self) -> int | None:
        """Waits for the save in flight; returns its step if it failed (`failed_save`)."""
        failed = self.failed_save(wait=True)
        self._manager.wait_until_finished()
        return failed

    def close(self) -> None:
        self.failed_save(wait=True)
        self._manager.close()
        self._remove_failed()

    def __enter__(self) -> 'Checkpointer':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _saved_iterator(saved: dict | None) -> Any:
    """A stand-in for an input iterator, holding `saved` (its state): what Grain's
    checkpoint handler saves from (`get_state`) and restores into (`set_state`)."""
    import grain

    class SavedIterator(grain.DatasetIterator):
        def __init__(self, saved):
            super().__init__()
            self.saved = saved

        def __next__(self):
            raise StopIteration

        def get_state(self) -> dict:
            return self.saved

        def set_state(self, state: dict) -> None:
            self.saved = state

    return SavedIterator(saved)


def _find_step_dir(path: Path) -> Path:
    if (path / STATE).is_dir():
        return path
    for root in (path, path / 'checkpoints'):
        steps = (
            sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
        )
        if steps:
            _warn_tmp(root, steps[-1])
            return root / str(steps[-1])
    raise CheckpointError(
        f"No checkpoint at {path}: expected a step directory with a '{STATE}/' item, a checkpoints "
        f"directory of numbered steps, or a workdir containing 'checkpoints/'; {_listing(path)}"
    )


def load_variables(path: str | Path) -> dict[str, Any]:
    """{'params', 'batch_stats'} as numpy arrays from a step dir, a checkpoints dir
    (latest finished step) or a workdir; for `init_from` fine-tuning. Only those two
    subtrees are read (partial restore), not the optimizer state."""
    step_dir = _find_step_dir(epath.Path(path) if '://' in str(path) else Path(path).absolute())
    item = step_dir / STATE
    checkpointer = ocp.PyTreeCheckpointer()
    try:
        tree = checkpointer.metadata(item).item_metadata.tree
        missing = [k for k in ('params', 'batch_stats') if k not in tree]
        if missing:
            raise KeyError(f'state item has no {missing}; it has {sorted(tree)}')
        subset = {k: tree[k] for k in ('params', 'batch_stats')}
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), subset)
        return checkpointer.restore(
            item,
            args=ocp.args.PyTreeRestore(
                item=subset, restore_args=restore_args, partial_restore=True
            ),
        )
    except Exception as e:
        raise CheckpointError(
            f'Cannot load params/batch_stats from {item}: {type(e).__name__}: {str(e)[:500]}'
        ) from e
