"""Every PNG the study commands write, drawn with matplotlib's Agg backend (no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def overfit_curve(
    steps: Sequence[int],
    loss: Sequence[float],
    accuracy: Sequence[float],
    target: float,
    reached_step: int | None,
    path: Path,
) -> Path:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(steps, loss)
    ax_loss.set_yscale('log')  # a healthy overfit drives the loss down by decades
    ax_loss.set(xlabel='step', ylabel='training loss (log)', title='Overfitting a fixed sample')
    ax_acc.plot(steps, accuracy, label='accuracy over the sample')
    ax_acc.axhline(target, color='grey', ls='--', label=f'target {target:.0%}')
    if reached_step is not None:
        ax_acc.axvline(reached_step, color='green', ls=':', label=f'reached at step {reached_step}')
    ax_acc.set(xlabel='step', ylabel='training accuracy', ylim=(0, 1.02), title='Accuracy')
    ax_acc.legend(loc='lower right')
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def lr_range(
    lrs: Sequence[float],
    loss: Sequence[float],
    smoothed: Sequence[float],
    suggestion: float | None,
    rule: str,
    path: Path,
) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, loss, color='lightgrey', label='loss per step')
    ax.plot(lrs, smoothed, color='C0', label='smoothed loss')
    if suggestion is not None:
        ax.axvline(suggestion, color='C3', ls='--', label=f'suggested {suggestion:.2g} ({rule})')
    ax.set_xscale('log')
    finite = np.asarray([v for v in smoothed if np.isfinite(v)])
    raw = np.asarray([v for v in loss if np.isfinite(v)])
    if finite.size:
        # Clip the diverging tail so the useful part of the curve stays readable.
        lo = min(finite.min(), raw.min() if raw.size else np.inf)
        hi = min(finite.max(), 4 * finite.min() + 1e-3)
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.1 * (hi - lo))
    ax.set(xlabel='learning rate (log scale)', ylabel='training loss', title='LR range test')
    ax.grid(alpha=0.3, which='both')
    ax.legend()
    return _save(fig, path)


def heatmap(
    values: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    row_name: str,
    col_name: str,
    title: str,
    path: Path,
    best: tuple[int, int] | None = None,
) -> Path:
    """`values` (rows x cols), NaN where a run is missing; numbers written in the cells."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(col_labels), 1.4 + 0.8 * len(row_labels)))
    im = ax.imshow(values, cmap='viridis', aspect='auto')
    ax.set_xticks(range(len(col_labels)), labels=col_labels)
    ax.set_yticks(range(len(row_labels)), labels=row_labels)
    ax.set(xlabel=col_name, ylabel=row_name, title=title)
    finite = values[np.isfinite(values)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = '-' if not np.isfinite(v) else f'{v:.3f}' + (' *' if best == (i, j) else '')
            ax.text(
                j,
                i,
                text,
                ha='center',
                va='center',
                color='black' if np.isfinite(v) and v > mid else 'white',
            )
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def train_val_curves(
    epochs_train: Sequence[int],
    train: Mapping[str, Sequence[float]],
    epochs_val: Sequence[int],
    val: Mapping[str, Sequence[float]],
    path: Path,
) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ('loss', 'accuracy')):
        ax.plot(epochs_train, train[key], marker='o', label='train (mean over the epoch)')
        ax.plot(epochs_val, val[key], marker='s', label='validation (end of epoch)')
        ax.set(xlabel='epoch', ylabel=key, title=f'{key.capitalize()} per epoch')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def learning_rate(steps: Sequence[int], lr: Sequence[float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(steps, lr)
    ax.set(xlabel='step', ylabel='learning rate', title='Learning rate')
    ax.grid(alpha=0.3)
    return _save(fig, path)


def gradient_norms(
    steps: Sequence[int], groups: Mapping[str, Sequence[float]], ratio: Sequence[float], path: Path
) -> Path:
    fig, (ax_g, ax_r) = plt.subplots(1, 2, figsize=(12, 4))
    for name, values in groups.items():
        ax_g.plot(steps, values, label=name)
    ax_g.set_yscale('log')  # the stages differ by orders of magnitude
    ax_g.set(xlabel='step', ylabel='gradient norm (log)', title='Gradient norm per stage')
    ax_g.legend(fontsize='small', ncol=2)
    ax_r.plot(steps, ratio)
    ax_r.set_yscale('log')
    ax_r.set(xlabel='step', ylabel='|update| / |params| (log)', title='Update / parameter ratio')
    for ax in (ax_g, ax_r):
        ax.grid(alpha=0.3, which='both')
    return _save(fig, path)


def confusion(matrix: np.ndarray, class_names: Sequence[str], title: str, path: Path) -> Path:
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(5.5, 2 + 0.6 * n), max(4.5, 1.6 + 0.55 * n)))
    im = ax.imshow(matrix, cmap='Blues')
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha='right')
    ax.set_yticks(range(n), labels=class_names)
    ax.set(xlabel='predicted class', ylabel='true class')
    ax.set_title(title, fontsize='medium')
    top = matrix.max() if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha='center',
                va='center',
                fontsize='small',
                color='white' if matrix[i, j] > top / 2 else 'black',
            )
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def image_grid(
    images: np.ndarray, captions: Sequence[str], title: str, path: Path, columns: int = 6
) -> Path:
    """uint8 images (N, H, W, C) with one caption each."""
    n = max(len(images), 1)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(
            image.squeeze() if image.shape[-1] == 1 else image,
            cmap='gray' if image.shape[-1] == 1 else None,
            interpolation='nearest',
        )
        ax.set_title(caption, fontsize='small')
    if not len(images):
        axes.flat[0].text(0.5, 0.5, 'no misclassified images', ha='center', va='center')
    fig.suptitle(title)
    return _save(fig, path)
