"""Over- or underfitting, in words, from the per-epoch curves."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Thresholds:
    turn_up: float = 0.05  # val loss this much (relative) above its minimum = turned up
    gap: float = 0.10  # train - val accuracy above this = a large generalization gap
    plateau_epochs: int = 3  # window for "the training loss stopped moving"
    plateau_change: float = 0.01  # relative change of the training loss over that window
    low_accuracy: float = 0.90  # training accuracy below this with a small gap = underfitting


def diagnose(
    train_loss: list[float],
    train_acc: list[float],
    val_loss: list[float],
    val_acc: list[float],
    epochs: list[int],
    t: Thresholds | None = None,
) -> dict:
    """Curves are aligned per epoch (`epochs` names them). Returns the findings as sentences,
    a one-word verdict and the numbers behind them."""
    t = t or Thresholds()
    out: dict = {
        'findings': [],
        'overfitting_epoch': None,
        'plateau': False,
        'final_gap': None,
        'verdict': 'too short to tell',
    }
    if not epochs:
        out['findings'].append('No completed epoch in metrics.jsonl.')
        return out
    gap = train_acc[-1] - val_acc[-1]
    out['final_gap'] = float(gap)
    out['findings'].append(
        f'Final epoch {epochs[-1]}: train accuracy {train_acc[-1]:.4f}, validation accuracy '
        f'{val_acc[-1]:.4f} (gap {gap:+.4f}); train loss {train_loss[-1]:.4f}, validation '
        f'loss {val_loss[-1]:.4f}.'
    )
    if len(epochs) < 2:
        out['findings'].append('Only one epoch: too short to read trends.')
        return out

    best = int(np.argmin(val_loss))
    turned_up = (
        best < len(epochs) - 1
        and val_loss[-1] > val_loss[best] * (1 + t.turn_up)
        and train_loss[-1] < train_loss[best]
    )
    if turned_up:
        out['overfitting_epoch'] = epochs[best + 1]
        out['findings'].append(
            f'Validation loss turned up after epoch {epochs[best]} (lowest {val_loss[best]:.4f}, '
            f'final {val_loss[-1]:.4f}) while training loss kept falling '
            f'({train_loss[best]:.4f} -> {train_loss[-1]:.4f}): overfitting from epoch '
            f'{epochs[best + 1]} on.'
        )
    if gap > t.gap:
        out['findings'].append(f'The train/validation accuracy gap ({gap:.3f}) exceeds {t.gap:g}.')

    window = min(t.plateau_epochs, len(epochs))  # the last `window` epochs, both ends included
    ref = train_loss[-window]
    change = (ref - train_loss[-1]) / max(abs(ref), 1e-12)
    if window >= 2 and abs(change) < t.plateau_change:
        out['plateau'] = True
        out['findings'].append(
            f'Training loss plateaued: it changed {change:+.2%} over the last {window} epochs '
            '(a lower learning rate or a schedule step may help).'
        )
    elif change > 0 and window >= 2:
        out['findings'].append(
            f'Training loss still falling ({change:.1%} over the last {window} epochs): '
            'more epochs would likely help.'
        )

    if turned_up or gap > t.gap:
        out['verdict'] = 'overfitting'
        out['findings'].append(
            'Verdict: overfitting; more regularization (weight decay, dropout, '
            'augmentation, label smoothing) or early stopping at the best epoch.'
        )
    elif train_acc[-1] < t.low_accuracy:
        out['verdict'] = 'underfitting'
        out['findings'].append(
            f'Verdict: underfitting; training accuracy {train_acc[-1]:.3f} is below '
            f'{t.low_accuracy:g} with a small gap (more capacity, epochs or learning rate).'
        )
    else:
        out['verdict'] = 'good fit'
        out['findings'].append('Verdict: good fit; high training accuracy and a small gap.')
    return out
