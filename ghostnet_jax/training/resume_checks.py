"""What a resume may change. A rerun in the same workdir continues the saved run; a
changed batch size, model, data or seed would silently continue another experiment
(a shifted LR schedule, another batch order), so those are refused, naming the fields.
Changes that alter the rest of the run on purpose (optimizer, epochs, callbacks,
augmentation) are allowed with a warning; bookkeeping (logging cadence, checkpoint
retention, eval batch size, test split) silently.

What the run computes with is not config: a resume on another device count or, on a CPU,
with another XLA thread count continues the same run, but not bit for bit (reductions are
split per device and per thread), so it says so in one line (`compute_change`)."""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

import ml_collections

log = logging.getLogger(__name__)

# Fields whose change makes the saved state belong to another experiment.
REFUSED = (
    'batch_size',
    'seed',
    'model.name',
    'model.dropout_rate',
    'data.source',
    'data.train_split',
    'data.val_split',
    'data.image_size',
)
# Fields whose change is deliberate but alters what follows.
WARNED = (
    'optimizer',
    'num_epochs',
    'max_steps',
    'label_smoothing',
    'ema_decay',
    'dtype',
    'data.augment',
    'data.low_res',
    'data.stream.random_resized_crop',
    'callbacks',
    'init_from',
)


class ResumeMismatchError(ValueError):
    """The config differs from the saved run's in a field a resume cannot change."""


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split('.'):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def run_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The fields a resume compares, as JSON."""
    d = config.to_dict()
    # Through JSON, as the saved identity went: a tuple field then compares equal to the
    # list it was saved as.
    return json.loads(json.dumps({field: _get(d, field) for field in REFUSED + WARNED}))


# Fields added to a compared section after runs were saved, with the value every run
# saved before them had: an identity without one means that value, not a change.
ADDED_LATER = {'optimizer': {'freeze_backbone_epochs': 0.0}}


def _unset(value: Any) -> bool:
    return value in (None, [], (), {}, 0, 0.0, '', False)


def comparable_identity(
    identity: Mapping[str, Any], current: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`identity` as this version compares it with `current`: fields added since at their
    old value; fields this version no longer has left out when they were unset (a value
    they held is refused by `written_before_release`)."""
    d = json.loads(json.dumps(dict(identity)))
    for section, fields in ADDED_LATER.items():
        if isinstance(d.get(section), dict):
            d[section] = {**fields, **d[section]}
    for section, fields in d.items():
        known = (current or {}).get(section)
        if isinstance(fields, dict) and isinstance(known, dict):
            d[section] = {k: v for k, v in fields.items() if k in known or not _unset(v)}
    return d


def written_before_release(
    identity: Mapping[str, Any],
    current: Mapping[str, Any],
    plan: Mapping[str, Any] | None,
    plan_fields: set[str],
    workdir: Any,
) -> None:
    """Raises ResumeMismatchError (one paragraph, exit code 2) for a run written by an
    earlier version that this one cannot continue exactly: its identity or its time
    budget's plan sets something this version no longer has (such as the decay the
    removed third budget fit bent mid-run)."""
    gone = [
        f'{section}.{k}={v!r}'
        for section, fields in identity.items()
        if isinstance(fields, dict) and isinstance(current.get(section), dict)
        for k, v in fields.items()
        if k not in current[section] and not _unset(v)
    ]
    gone += [
        f'time budget {k}={v!r}'
        for k, v in (plan or {}).items()
        if k not in plan_fields and not _unset(v)
    ]
    if not gone:
        return
    raise ResumeMismatchError(
        f'{workdir} holds a run written by an earlier version of ghostnet_jax, with settings '
        f'this version no longer has ({"; ".join(gone)}), so it cannot continue that run '
        'exactly. The run still evaluates and predicts (python -m ghostnet_jax.evaluate '
        f'--workdir {workdir}); to train further, start a new --workdir.'
    )


def check_resume(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    spec_differences: list[str],
    warn: bool = True,
    budgeted: bool = False,
) -> None:
    """Raises ResumeMismatchError for refused changes; warns about the others (if `warn`).
    `saved` may be empty (a checkpoint from before identities were stored): nothing to
    compare. `budgeted`: the run's length comes from a time budget's plan, so num_epochs
    is not compared."""
    if not saved:
        return
    saved, current = comparable_identity(saved, current), comparable_identity(current)
    if budgeted:  # the plan decides the length, not num_epochs
        saved.pop('num_epochs', None)
        current.pop('num_epochs', None)
    refused = [
        f'{f}: {saved.get(f)!r} -> {current.get(f)!r}'
        for f in REFUSED
        if f in saved and saved.get(f) != current.get(f)
    ]
    refused += [f'training data {d}' for d in spec_differences]
    if refused:
        raise ResumeMismatchError(
            'This workdir holds a run with another ' + '; '.join(refused) + '. Resuming would '
            'continue a different experiment (another batch order, LR schedule or input '
            'normalization). Use a new --workdir, or restore the original values.'
        )
    for f in WARNED if warn else ():
        if f in saved and saved.get(f) != current.get(f):
            log.warning(
                'Resuming with a changed %s (%r -> %r): the rest of the run uses the new value.',
                f,
                saved.get(f),
                current.get(f),
            )


def compute_change(
    segments: list[Mapping[str, Any]], current: Mapping[str, Any], step: int
) -> str | None:
    """The one line a resume at `step` logs when it computes otherwise than the run did
    until then (`segments`: LoopState.compute; `current`: environment.compute_setup()),
    or None (same setup, or a run saved before setups were recorded)."""
    if not segments:
        return None
    last = segments[-1]
    what = {'backend': 'backend', 'devices': 'devices', 'xla_cpu_threads': 'XLA:CPU threads'}
    changed = [
        f'{what[k]} {last.get(k)} -> {current.get(k)}'
        for k in what
        if last.get(k) != current.get(k)
    ]
    if not changed:
        return None
    hint = ''
    if changed == [
        f'XLA:CPU threads {last.get("xla_cpu_threads")} -> {current.get("xla_cpu_threads")}'
    ] and last.get('xla_cpu_threads'):
        hint = f' Rerun with NPROC={last["xla_cpu_threads"]} set to continue it bit for bit.'
    return (
        f'Resuming at step {step} with {", ".join(changed)}: the run goes on, but matches '
        f'an uninterrupted run to float tolerance, not bit for bit (reductions are split '
        f'per device and per thread; docs/reliability.md#determinism).{hint}'
    )
