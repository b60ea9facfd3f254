"""Metric logging (TensorBoard + JSON lines) and a console progress line.

Named metrics_log (not logging) so that `import logging` inside this package still
means the standard library.

Tags written by the trainer: train/loss, train/accuracy, train/learning_rate,
train/grad_norm, train/grad_norm/<stage>, train/update_param_ratio,
train/images_per_second, train/epoch_time_s, val/loss, val/accuracy.

`<workdir>/metrics.jsonl` gets one object per write_scalars() call:
  {"step": 100, "epoch": 1, "split": "train", "loss": 1.2, "grad_norm/stage1": 0.3}
Non-finite values are written as null so that every line is strict JSON.

Remote workdirs (gs://...): object stores cannot append, so the JSON lines go to a local
mirror (seeded from the remote file on resume) that flush() uploads whole; TensorBoard
writes gs:// itself.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

import jax
import ml_collections
import numpy as np
from etils import epath

log = logging.getLogger(__name__)


def is_remote(path: Any) -> bool:
    """Whether `path` names an object store (gs://, s3://, ...) rather than a local folder."""
    return '://' in str(path)


def _to_float(v: Any) -> float:
    return float(np.asarray(v))


class MetricsWriter:
    """Writes scalars to `<workdir>/tensorboard` and `<workdir>/metrics.jsonl`.

    `enabled` defaults to process 0 only, so multi-host runs write one copy; on other
    processes every method is a no-op (values are not even fetched from device).
    """

    def __init__(
        self,
        workdir: str | Path | epath.Path,
        enabled: bool | None = None,
        remote: bool | None = None,
    ):
        self.enabled = jax.process_index() == 0 if enabled is None else bool(enabled)
        self.workdir = epath.Path(workdir)
        self._remote = is_remote(workdir) if remote is None else remote
        self._tb = None
        self._jsonl: TextIO | None = None
        if self.enabled:
            from tensorboardX import (
                SummaryWriter,  # imported lazily: only the writer process needs it
            )

            self.workdir.mkdir(parents=True, exist_ok=True)
            self._tb = SummaryWriter(logdir=str(self.workdir / 'tensorboard'))
            target = self.workdir / 'metrics.jsonl'
            if self._remote:
                self._mirror_dir = Path(tempfile.mkdtemp(prefix='ghostnet_jax_metrics_'))
                local = self._mirror_dir / 'metrics.jsonl'
                if target.exists():
                    local.write_bytes(target.read_bytes())
            else:
                local = Path(target)
            # Append: a resumed run continues the same file (steps may repeat after a restore).
            self._jsonl = open(local, 'a', encoding='utf-8')
            self._local_jsonl, self._target_jsonl = local, target

    def write_scalars(
        self,
        step: int,
        scalars: Mapping[str, Any],
        prefix: str | None = None,
        epoch: int | None = None,
    ) -> None:
        """Tags are `<prefix>/<key>`; `prefix` ('train'/'val') is also the jsonl `split`."""
        if not self.enabled:
            return
        step = int(step)
        values = {k: _to_float(v) for k, v in scalars.items()}
        record: dict[str, Any] = {'step': step, 'epoch': epoch, 'split': prefix}
        for key, value in values.items():
            self._tb.add_scalar(f'{prefix}/{key}' if prefix else key, value, step)
            record[key] = value if math.isfinite(value) else None
        self._jsonl.write(json.dumps(record) + '\n')

    def write_hparams(
        self, flat_config: Mapping[str, Any], final_metrics: Mapping[str, Any]
    ) -> None:
        """Hparams-plugin entry; metrics are tagged `final/<key>` so they do not collide
        with the per-step scalars of the same name."""
        if not self.enabled:
            return
        hparams = {
            k: v if isinstance(v, (bool, int, float, str)) else str(v)
            for k, v in flat_config.items()
        }
        metrics = {f'final/{k}': _to_float(v) for k, v in final_metrics.items()}
        self._tb.add_hparams(hparams, metrics, name='hparams')

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()
            if self._remote:
                self._target_jsonl.write_bytes(self._local_jsonl.read_bytes())

    def close(self) -> None:
        if self.enabled and self._jsonl is not None:
            self.flush()
            self._tb.close()
            self._jsonl.close()
            self._jsonl = None
            if self._remote:
                shutil.rmtree(self._mirror_dir, ignore_errors=True)

    def __enter__(self) -> 'MetricsWriter':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return '?'
    return str(datetime.timedelta(seconds=int(round(seconds))))


class Progress:
    """One progress line per step window: epoch, step/steps, loss, acc, img/s, ETA.

    On a TTY the line is rewritten in place with '\\r' (at most every `tty_interval_s`);
    otherwise (log files, CI) a plain line is printed every `every_steps` steps or
    `every_seconds` seconds, whichever comes first, and on the last step of the epoch.
    Metric values are converted with float() only when a line is printed, so passing
    device arrays does not force a device sync on every step.
    """

    def __init__(
        self,
        steps_per_epoch: int,
        num_epochs: int,
        batch_size: int,
        *,
        stream: TextIO | None = None,
        is_tty: bool | None = None,
        every_steps: int = 100,
        every_seconds: float = 30.0,
        tty_interval_s: float = 0.2,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.steps_per_epoch, self.num_epochs, self.batch_size = (
            steps_per_epoch,
            num_epochs,
            batch_size,
        )
        self.stream = stream if stream is not None else sys.stdout
        if is_tty is None:
            is_tty = bool(getattr(self.stream, 'isatty', lambda: False)())
        self.is_tty = is_tty
        self.every_steps, self.every_seconds, self.tty_interval_s = (
            every_steps,
            every_seconds,
            tty_interval_s,
        )
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.clock = clock
        self._epoch = 0
        self._epoch_start = self._last_print = clock()
        self._last_print_step = 0
        self._line_len = 0

    def start_epoch(self, epoch: int) -> None:
        """`epoch` is 1-based for display."""
        self._epoch = epoch
        self._epoch_start = self._last_print = self.clock()
        self._last_print_step = 0

    def update(self, step: int, metrics: Mapping[str, Any]) -> None:
        """`step` is 1-based within the epoch; metrics may hold 'loss' and 'accuracy'."""
        if not self.enabled:
            return
        now = self.clock()
        last = step >= self.steps_per_epoch
        if self.is_tty:
            due = last or now - self._last_print >= self.tty_interval_s
        else:
            due = (
                last
                or step - self._last_print_step >= self.every_steps
                or now - self._last_print >= self.every_seconds
            )
        if not due:
            return
        # Averaged over the epoch so far: steps are dispatched asynchronously and the host
        # only waits for the device at log flushes, so short windows swing wildly.
        elapsed = now - self._epoch_start
        ips = step * self.batch_size / elapsed if elapsed > 0 else float('nan')
        per_step = (now - self._epoch_start) / step
        eta_epoch = per_step * (self.steps_per_epoch - step)
        eta_total = eta_epoch + per_step * self.steps_per_epoch * (self.num_epochs - self._epoch)
        parts = [f'epoch {self._epoch}/{self.num_epochs}', f'step {step}/{self.steps_per_epoch}']
        for key, label in (('loss', 'loss'), ('accuracy', 'acc')):
            if key in metrics:
                parts.append(f'{label} {float(np.asarray(metrics[key])):.4f}')
        parts += [f'{ips:.1f} img/s', f'ETA {_hms(eta_epoch)} (total {_hms(eta_total)})']
        line = ' | '.join(parts)
        if self.is_tty:
            self.stream.write('\r' + line.ljust(self._line_len) + ('\n' if last else ''))
            self._line_len = 0 if last else len(line)
        else:
            self.stream.write(line + '\n')
        self.stream.flush()
        self._last_print, self._last_print_step = now, step

    def write(self, message: str) -> None:
        """Prints a full line (e.g. the epoch summary) without garbling a TTY progress line."""
        if not self.enabled:
            return
        if self.is_tty and self._line_len:
            self.stream.write('\n')
            self._line_len = 0
        self.stream.write(message + '\n')
        self.stream.flush()


def write_run_config(
    workdir: epath.Path, config: ml_collections.ConfigDict, replace: bool = False
) -> None:
    """Saves the resolved config; a resumed run with a changed config adds a new file.
    `replace`: the same run refined a value it could only measure (a time budget's
    num_epochs), so config.json itself is rewritten."""
    if jax.process_index() != 0:
        return
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    path = workdir / 'config.json'
    if replace:
        path.write_text(text)
        return
    if path.exists() and path.read_text() != text:
        changes = config_changes(path.read_text(), text)
        path = workdir / f'config.{time.strftime("%Y%m%d-%H%M%S")}.json'
        log.warning(
            'Config differs from the one this workdir started with (%s); saved as %s',
            changes,
            path,
        )
    if not path.exists():
        path.write_text(text)


def config_changes(old_json: str, new_json: str, limit: int = 6) -> str:
    """What differs between two saved configs, e.g. 'optimizer.learning_rate: 0.1 -> 0.05,
    seed: absent -> 1': the fields a resumed run's user changed, or that a newer version of
    the package added or removed."""
    try:
        old, new = flat_scalars(json.loads(old_json)), flat_scalars(json.loads(new_json))
    except ValueError:
        return 'the saved config.json is not JSON'
    absent = object()
    keys = [k for k in sorted(old.keys() | new.keys()) if old.get(k, absent) != new.get(k, absent)]
    shown = lambda d, k: str(d[k]) if k in d else 'absent'
    parts = [f'{k}: {shown(old, k)} -> {shown(new, k)}' for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f'and {len(keys) - limit} more')
    return ', '.join(parts) or 'only its formatting'


def flat_scalars(d: dict, prefix: str = '') -> dict:
    """A nested dict as dotted keys with scalar values, for TensorBoard's hparams."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_scalars(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
