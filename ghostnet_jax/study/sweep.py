"""Grid search on top of the trainer: every combination trains in its own run folder under
the sweep's workdir (train_and_evaluate, or `vectorized` for groups that differ only in
shape-preserving fields), and the table is rebuilt from those folders' results.json.

Resumable: a run folder with results.json (or diverged.json) is finished and skipped; a run
killed mid-way resumes from its checkpoints (one-by-one) or is retrained with its group
(vectorized). The best row is chosen by validation accuracy, never test.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np

from ghostnet_jax.study import grid as G
from ghostnet_jax.study import plots
from ghostnet_jax.study.report import report_finished_run
from ghostnet_jax.study.vectorized import (
    train_vectorized,
    why_not_vectorized,
    without_vector_fields,
    write_divergence,
)
from ghostnet_jax.training.config_checks import ConfigError

log = logging.getLogger(__name__)

TrainFn = Callable[[ml_collections.ConfigDict, Path], dict]


class SweepError(ConfigError):
    """The sweep's workdir holds a run made with another config."""


def _config_text(config: ml_collections.ConfigDict) -> str:
    # The exact text train_and_evaluate writes to config.json.
    return config.to_json_best_effort(indent=2, sort_keys=True)


def _comparable(saved: dict, planned: dict) -> dict:
    """A saved config as compared with the planned one: fields this version no longer has
    are left out where they were unset (another value is another config)."""
    out = {}
    for key, value in saved.items():
        if key not in planned:
            if value not in (None, [], (), {}, 0, 0.0, '', False):
                out[key] = value
        elif isinstance(value, dict) and isinstance(planned[key], dict):
            out[key] = _comparable(value, planned[key])
        else:
            out[key] = value
    return out


def finished(run_dir: Path, config: ml_collections.ConfigDict) -> dict | None:
    """The run's results when it is finished with this config; None if it still has to run."""
    done = [p for p in (run_dir / 'results.json', run_dir / 'diverged.json') if p.exists()]
    if not done:
        return None
    saved = run_dir / 'config.json'
    planned = json.loads(_config_text(config))
    if saved.exists() and _comparable(json.loads(saved.read_text()), planned) != planned:
        raise SweepError(
            f'{run_dir} was trained with a different config; use a new sweep '
            'workdir or delete that run folder.'
        )
    return json.loads(done[0].read_text())


def _status(results: dict) -> str:
    return 'diverged' if results.get('status') == 'diverged' else 'done'


def _reported(config: ml_collections.ConfigDict, run_dir: Path, results: dict) -> dict:
    """`results`, after writing the run's report/ when its config asks for one."""
    if config.get('report') and _status(results) == 'done':
        report_finished_run(run_dir)
    return results


def _train_one(train_fn: TrainFn, config: ml_collections.ConfigDict, run_dir: Path) -> dict:
    from ghostnet_jax.training.loop_state import NonFiniteLossError

    try:
        return _reported(config, run_dir, train_fn(config, run_dir))
    except NonFiniteLossError as e:
        # Recorded, so that a resumed sweep does not retrain a run known to diverge.
        results = {'status': 'diverged', 'message': str(e)}
        write_divergence(run_dir, results)
        return results


def run_sweep(
    config: ml_collections.ConfigDict,
    axes: list[G.Axis],
    workdir: str | Path,
    vectorize: bool = False,
    train_fn: TrainFn | None = None,
    variants: list[tuple[str, dict]] | None = None,
) -> dict:
    """Trains what is missing, writes results.csv / results.md / heatmap.png, returns
    {'rows', 'best', 'trained', 'skipped', 'table'}. `variants` (named override sets, see
    grid.parse_variants) replace the grid's product when given."""
    from ghostnet_jax.configs import default as default_config
    from ghostnet_jax.training.config_checks import validate_config

    if train_fn is None:
        from ghostnet_jax.training.trainer import train_and_evaluate as train_fn
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if axes and variants:
        raise ValueError('give either --grid axes or --variant runs, not both.')
    if variants:
        fields = list(dict.fromkeys(f for _, overrides in variants for f in overrides))
        named = variants
    else:
        fields = [a[0] for a in axes]
        named = [(G.run_name(o), o) for o in G.combinations(axes)]
    runs = []
    for name, overrides in named:
        run_config = G.apply_overrides(config, overrides)
        validate_config(run_config, default_config.get_config())  # all before any training
        # The table shows every field any run changes, with this run's value of it.
        runs.append((name, {f: G.get_field(run_config, f) for f in fields}, run_config))
    (workdir / 'sweep.json').write_text(
        json.dumps(
            {
                'grid': {f: v for f, v in axes},
                'variants': dict(variants or []),
                'vectorize': vectorize,
                'runs': [name for name, _, _ in runs],
            },
            indent=2,
            default=str,
        )
    )
    (workdir / 'base_config.json').write_text(_config_text(config))

    results: dict[str, dict] = {}
    for name, _, run_config in runs:
        done = finished(workdir / name, run_config)
        if done is not None:
            results[name] = done
    skipped = sorted(results)
    if skipped:
        log.info('Skipping %d finished runs: %s', len(skipped), ', '.join(skipped))
    todo = [r for r in runs if r[0] not in results]
    trained = []

    reason = why_not_vectorized(config) if vectorize else 'not requested'
    if vectorize and reason:
        log.warning('--vectorize: training one by one, %s.', reason)
    if vectorize and not reason:
        # Runs that agree on every field but the vectorizable ones share one program.
        groups: dict[str, list] = {}
        for run in todo:
            key = json.dumps(without_vector_fields(run[2]), sort_keys=True, default=str)
            groups.setdefault(key, []).append(run)
        for group in groups.values():
            if len(group) == 1:  # nothing to share: the plain (resumable) trainer
                name, _, run_config = group[0]
                results[name] = _train_one(train_fn, run_config, workdir / name)
                trained.append(name)
                continue
            dirs = [workdir / name for name, _, _ in group]
            for d in dirs:
                if d.exists():  # partial output of a killed attempt; the group starts over
                    log.info('Removing unfinished %s', d)
                    shutil.rmtree(d)
            start = time.time()
            outs = train_vectorized([c for _, _, c in group], dirs)
            log.info('Vectorized group of %d runs: %.0f s', len(group), time.time() - start)
            for (name, _, run_config), out in zip(group, outs):
                results[name] = _reported(run_config, workdir / name, out)
                trained.append(name)
    else:
        for name, _, run_config in todo:
            log.info('Run %s', name)
            results[name] = _train_one(train_fn, run_config, workdir / name)
            trained.append(name)

    rows = [
        G.result_row(name, overrides, results[name], _status(results[name]))
        for name, overrides, _ in runs
    ]
    best = G.best_row(rows)
    G.write_csv(rows, fields, workdir / 'results.csv')
    table = G.markdown(rows, fields, best)
    (workdir / 'results.md').write_text(
        table + '\n\nBest by validation accuracy (test accuracy is shown, never used to '
        f'choose): {best["run"] if best else "none"}\n'
    )
    if len(axes) == 2 and not variants:
        write_heatmap(rows, axes, best, workdir / 'heatmap.png')
    return {'rows': rows, 'best': best, 'trained': trained, 'skipped': skipped, 'table': table}


def write_heatmap(rows: list[dict], axes: list[G.Axis], best: dict | None, path: Path) -> Path:
    (row_field, row_values), (col_field, col_values) = axes
    values = np.full((len(row_values), len(col_values)), math.nan)
    where = None
    for r in rows:
        i, j = row_values.index(r[row_field]), col_values.index(r[col_field])
        values[i, j] = r['val_accuracy']
        if best is not None and r['run'] == best['run']:
            where = (i, j)
    return plots.heatmap(
        values,
        [str(v) for v in row_values],
        [str(v) for v in col_values],
        row_field,
        col_field,
        'Validation accuracy (* = best)',
        path,
        where,
    )
