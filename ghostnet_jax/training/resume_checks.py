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
REFUSED = ('batch_size', 'seed', 'model.name', 'model.dropout_rate', 'data.source',
           'data.train_split', 'data.val_split', 'data.image_size')
# Fields whose change is deliberate but alters what follows.
WARNED = ('optimizer', 'num_epochs', 'max_steps', 'label_smoothing', 'ema_decay', 'dtype',
          'data.augment', 'data.low_res', 'data.stream.random_resized_crop', 'callbacks',
          'init_from')


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


def without_budget_fields(identity: Mapping[str, Any]) -> dict[str, Any]:
    """An identity without what a time budget measures rather than the user chooses.
    Before 2026-12 a budgeted run wrote its fitted num_epochs, its low-res count and its
    decay's bend into its config, and so into the identity its checkpoints saved; a
    resume of such a run must not read them as the user's changes."""
    d = json.loads(json.dumps(dict(identity)))
    d.pop('num_epochs', None)
    if isinstance(d.get('optimizer'), dict):
        d['optimizer'].pop('decay_respaced_from', None)
    if isinstance(d.get('data.low_res'), dict):
        d['data.low_res'].pop('epochs_fraction', None)
    return d


# Fields added to a compared section after runs were saved, with the value every run
# saved before them had: an identity without one means that value, not a change.
ADDED_LATER = {'optimizer': {'freeze_backbone_epochs': 0.0}}


def with_added_fields(identity: Mapping[str, Any]) -> dict[str, Any]:
    """`identity` with the fields of ADDED_LATER it predates, at their old value."""
    d = json.loads(json.dumps(dict(identity)))
    for section, fields in ADDED_LATER.items():
        if isinstance(d.get(section), dict):
            d[section] = {**fields, **d[section]}
    return d


def check_resume(saved: Mapping[str, Any], current: Mapping[str, Any],
                 spec_differences: list[str], warn: bool = True,
                 budgeted: bool = False) -> None:
    """Raises ResumeMismatchError for refused changes; warns about the others (if `warn`).
    `saved` may be empty (a checkpoint from before identities were stored): nothing to
    compare. `budgeted`: the run's length comes from a time budget's plan, so the fields
    a budget measures are not compared."""
    if not saved:
        return
    saved = with_added_fields(saved)
    if budgeted:
        saved, current = without_budget_fields(saved), without_budget_fields(current)
    refused = [f'{f}: {saved.get(f)!r} -> {current.get(f)!r}' for f in REFUSED
               if f in saved and saved.get(f) != current.get(f)]
    refused += [f'training data {d}' for d in spec_differences]
    if refused:
        raise ResumeMismatchError(
            'This workdir holds a run with another ' + '; '.join(refused) + '. Resuming would '
            'continue a different experiment (another batch order, LR schedule or input '
            'normalization). Use a new --workdir, or restore the original values.')
    for f in WARNED if warn else ():
        if f in saved and saved.get(f) != current.get(f):
            log.warning('Resuming with a changed %s (%r -> %r): the rest of the run uses the '
                        'new value.', f, saved.get(f), current.get(f))


def compute_change(segments: list[Mapping[str, Any]], current: Mapping[str, Any],
                   step: int) -> str | None:
    """The one line a resume at `step` logs when it computes otherwise than the run did
    until then (`segments`: LoopState.compute; `current`: environment.compute_setup()),
    or None (same setup, or a run saved before setups were recorded)."""
    if not segments:
        return None
    last = segments[-1]
    what = {'backend': 'backend', 'devices': 'devices', 'xla_cpu_threads': 'XLA:CPU threads'}
    changed = [f'{what[k]} {last.get(k)} -> {current.get(k)}' for k in what
               if last.get(k) != current.get(k)]
    if not changed:
        return None
    hint = ''
    if changed == [f'XLA:CPU threads {last.get("xla_cpu_threads")} -> '
                   f'{current.get("xla_cpu_threads")}'] and last.get('xla_cpu_threads'):
        hint = f' Rerun with NPROC={last["xla_cpu_threads"]} set to continue it bit for bit.'
    return (f'Resuming at step {step} with {", ".join(changed)}: the run goes on, but matches '
            f'an uninterrupted run to float tolerance, not bit for bit (reductions are split '
            f'per device and per thread; docs/reliability.md#determinism).{hint}')
