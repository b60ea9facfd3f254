"""A finished run, read back for a person: curves, diagnosis, gradient health, confusion
matrix, per-class accuracy and misclassified images, gathered in WORKDIR/report/report.md.

Reads only the run folder (metrics.jsonl, results.json, config.json, the best checkpoint);
never trains.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from ghostnet_jax.study import plots
from ghostnet_jax.study.diagnosis import diagnose
from ghostnet_jax.study.history import RunHistory, load_history
from ghostnet_jax.study.predictions import Predictions, load_run_config, predict
from ghostnet_jax.training.grad_health import GradientHealth

MAX_MISCLASSIFIED = 24

log = logging.getLogger(__name__)


def _curves(history: RunHistory, out: Path) -> tuple[dict, list[str]]:
    train_epochs, train = history.train_epochs()
    val_epochs, val = history.val_epochs()
    figures = []
    if train_epochs or val_epochs:
        plots.train_val_curves(train_epochs, train, val_epochs, val, out / 'curves.png')
        figures.append('curves.png')
    steps, lr = history.series('learning_rate')
    if steps:
        plots.learning_rate(steps, lr, out / 'learning_rate.png')
        figures.append('learning_rate.png')
    groups = {g: history.series(f'grad_norm/{g}')[1] for g in history.groups()}
    ratio_steps, ratio = history.series('update_param_ratio')
    if groups and ratio_steps:
        plots.gradient_norms(ratio_steps, groups, ratio, out / 'gradients.png')
        figures.append('gradients.png')
    # Only epochs with both curves can be compared.
    common = [e for e in val_epochs if e in train_epochs]
    pick = lambda epochs, values: [values[epochs.index(e)] for e in common]
    diagnosis = diagnose(
        pick(train_epochs, train['loss']),
        pick(train_epochs, train['accuracy']),
        pick(val_epochs, val['loss']),
        pick(val_epochs, val['accuracy']),
        common,
    )
    return diagnosis, figures


def _gradient_warnings(history: RunHistory) -> list[str]:
    """What GradientHealth would have logged during the run."""
    health, warnings = GradientHealth(), []
    for step in history.steps():
        warnings += health.update(step, history.train[step])
    return warnings


def _spread_over_classes(wrong: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Up to MAX_MISCLASSIFIED indices, taken in turn from each true class (the split is
    sorted by class, so the first ones would all be one class)."""
    per_class = [list(wrong[labels[wrong] == c]) for c in np.unique(labels[wrong])]
    picked = []
    while len(picked) < MAX_MISCLASSIFIED and any(per_class):
        for queue in per_class:
            if queue and len(picked) < MAX_MISCLASSIFIED:
                picked.append(queue.pop(0))
    return np.asarray(sorted(picked), np.int64)


def _predictions_section(pred: Predictions, out: Path) -> list[str]:
    matrix = pred.confusion()
    names = pred.class_names
    plots.confusion(
        matrix,
        names,
        f'Confusion matrix, {pred.split} ({pred.spec})\n'
        f'{pred.checkpoint} checkpoint, step {pred.step}',
        out / 'confusion.png',
    )
    wrong = _spread_over_classes(np.flatnonzero(pred.labels != pred.predicted), pred.labels)
    plots.image_grid(
        pred.images[wrong],
        [f'true {names[pred.labels[i]]}\npred {names[pred.predicted[i]]}' for i in wrong],
        f'Misclassified {pred.split} images ({len(wrong)} of '
        f'{int((pred.labels != pred.predicted).sum())})',
        out / 'misclassified.png',
    )
    total = int(matrix.sum())
    lines = [
        f'## Predictions on {pred.split} (`{pred.spec}`, {total} images, {pred.checkpoint} '
        f'checkpoint, step {pred.step})',
        '',
        f'Accuracy {np.trace(matrix) / max(total, 1):.4f}.',
        '',
        '| class | images | correct | accuracy |',
        '|---|---|---|---|',
    ]
    for i, name in enumerate(names):
        count = int(matrix[i].sum())
        acc = f'{matrix[i, i] / count:.4f}' if count else '-'
        lines.append(f'| {name} | {count} | {int(matrix[i, i])} | {acc} |')
    lines += [
        '',
        '![confusion matrix](confusion.png)',
        '',
        '![misclassified](misclassified.png)',
        '',
    ]
    summary = {
        'split': pred.split,
        'spec': pred.spec,
        'step': pred.step,
        'checkpoint': pred.checkpoint,
        'num_examples': total,
        'class_names': list(names),
        'confusion': matrix.tolist(),
        'misclassified': int((pred.labels != pred.predicted).sum()),
    }
    (out / 'predictions.json').write_text(json.dumps(summary, indent=2))
    return lines


def _results_lines(results: dict | None) -> list[str]:
    if not results:
        return ['No results.json (the run has not finished): no final numbers.', '']
    lines = [
        f'Stop: {results.get("stop_reason")}; {results.get("epochs_trained")} epochs; '
        f'final evaluation of the {results.get("checkpoint")} checkpoint (step '
        f'{results.get("step")}).',
        '',
    ]
    for role in ('val', 'test'):
        r = results.get(role)
        if r:
            lines.append(
                f'- {role}: accuracy {r["accuracy"]:.4f}, loss {r["loss"]:.4f} '
                f'({r["num_examples"]} images)'
            )
    return lines + ['']


def _plateau_factor(workdir: Path) -> float | None:
    """ReduceLROnPlateau's factor where the run's config.json enables it, else None."""
    if not (workdir / 'config.json').exists():
        return None
    plateau = load_run_config(workdir).get('callbacks', {}).get('reduce_lr_on_plateau', {})
    return float(plateau['factor']) if plateau.get('enabled') else None


def epochs_lines(
    history: RunHistory, results: dict | None, plateau_factor: float | None
) -> list[str]:
    """One row per epoch: the train means, validation, the learning rate at its end, and
    the events a reader of curves looks for (a plateau's cut, the epoch whose weights the
    final evaluation used)."""
    train_epochs, train = history.train_epochs()
    rates = history.epoch_learning_rates()
    final_epoch = (
        (results or {}).get('epoch') if (results or {}).get('checkpoint') == 'best' else None
    )
    lines = [
        '| epoch | train loss | train accuracy | val loss | val accuracy | learning rate (end) '
        '| note |',
        '|---|---|---|---|---|---|---|',
    ]
    for epoch in sorted(set(train_epochs) | set(history.val)):
        cells = [str(epoch)]
        if epoch in train_epochs:
            i = train_epochs.index(epoch)
            cells += [f'{train["loss"][i]:.4f}', f'{train["accuracy"][i]:.4f}']
        else:
            cells += ['-', '-']
        val = history.val.get(epoch)
        cells += [f'{val["loss"]:.4f}', f'{val["accuracy"]:.4f}'] if val else ['-', '-']
        notes = []
        if epoch in rates:
            cells.append(f'{rates[epoch][1]:.3g}')
            # A plateau cuts the rate between two epochs; a schedule moves it by a step.
            before = rates.get(epoch - 1)
            if plateau_factor and before and rates[epoch][0] <= before[1] * plateau_factor * 1.05:
                notes.append(
                    f'lr x{rates[epoch][0] / before[1]:.2g} (plateau, after epoch {epoch - 1})'
                )
        else:
            cells.append('-')
        if epoch == final_epoch:
            notes.append('final weights (best epoch)')
        lines.append('| ' + ' | '.join(cells + ['; '.join(notes)]) + ' |')
    return lines + ['']


def write_report(workdir: str | Path) -> Path:
    """Writes WORKDIR/report/ (report.md, PNGs, predictions.json); returns report.md's path."""
    workdir = Path(workdir)
    history = load_history(workdir)  # first: a wrong --workdir must not get a report/ folder
    out = workdir / 'report'
    out.mkdir(parents=True, exist_ok=True)
    results_path = workdir / 'results.json'
    results = json.loads(results_path.read_text()) if results_path.exists() else None

    diagnosis, figures = _curves(history, out)
    warnings = _gradient_warnings(history)
    lines = [f'# Run report: {workdir.name}', '']
    lines += _results_lines(results)
    lines += ['## Diagnosis', ''] + [f'- {f}' for f in diagnosis['findings']] + ['']
    captions = {
        'curves.png': 'Train vs validation loss and accuracy per epoch',
        'learning_rate.png': 'Learning rate per step',
        'gradients.png': 'Gradient norm per stage and update/parameter ratio per step',
    }
    lines += ['## Epochs', ''] + epochs_lines(history, results, _plateau_factor(workdir))
    lines += ['## Curves', '']
    for name in figures:
        lines += [f'![{captions[name]}]({name})', '']
    lines += ['## Gradient health', '']
    lines += (
        [f'- {w}' for w in warnings]
        if warnings
        else ["No stage's gradient norm vanished or exploded relative to its own history."]
    )
    lines.append('')
    has_checkpoint = (workdir / 'checkpoints').is_dir() and any(
        p.name.isdigit() for p in (workdir / 'checkpoints').iterdir()
    )
    if has_checkpoint:
        lines += _predictions_section(predict(workdir), out)
    else:
        lines += ['No checkpoint: no confusion matrix.', '']
    (out / 'diagnosis.json').write_text(
        json.dumps(
            {**diagnosis, 'gradient_warnings': warnings},
            indent=2,
            default=lambda v: None if isinstance(v, float) and math.isnan(v) else v,
        )
    )
    path = out / 'report.md'
    path.write_text('\n'.join(lines))
    return path


def report_finished_run(workdir: str | Path) -> Path | None:
    """report/ for a run that `train` or `sweep` has just finished (config.report), on the
    first process only. A report that fails is a warning: the run and its results are
    complete without it. An up-to-date report (a rerun of a finished run) is kept."""
    import jax

    workdir = Path(workdir)
    report, results = workdir / 'report' / 'report.md', workdir / 'results.json'
    if jax.process_index() != 0 or not results.exists():
        return None
    if report.exists() and report.stat().st_mtime >= results.stat().st_mtime:
        return report
    try:
        path = write_report(workdir)
    except Exception as e:  # plots must never cost a finished run its exit status
        log.warning(
            'Could not write the run report (%s: %s); retry with python -m '
            'ghostnet_jax.report --workdir %s',
            type(e).__name__,
            e,
            workdir,
        )
        return None
    log.info('Report: %s', path)
    return path
