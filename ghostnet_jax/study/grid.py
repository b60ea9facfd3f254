"""A sweep's grid: parsing `--grid FIELD=V1,V2,...`, one config and run folder per
combination, and the results table (CSV, markdown, best row by validation accuracy)."""

from __future__ import annotations

import ast
import csv
import itertools
import math
import re
from pathlib import Path
from typing import Any

import ml_collections

from ghostnet_jax.training.config_checks import ConfigError

Axis = tuple[str, list[Any]]


def parse_value(text: str) -> Any:
    """Python literal where it is one (0.1, 16, True, 'x'), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_grid(specs: list[str]) -> list[Axis]:
    axes: list[Axis] = []
    for spec in specs:
        field, sep, values = spec.partition('=')
        if not sep or not field or not values:
            raise ConfigError(
                f'--grid {spec!r}: expected FIELD=V1,V2,... (e.g. optimizer.learning_rate=0.01,0.1)'
            )
        if field in (a[0] for a in axes):
            raise ConfigError(f'--grid names {field} twice.')
        axes.append((field, [parse_value(v) for v in values.split(',')]))
    return axes


def parse_variants(specs: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """`NAME:FIELD=V,FIELD=V` (or `NAME:` for the config as is): named runs, for ablations
    (a baseline plus one switch at a time) that a product grid cannot express."""
    variants = []
    for spec in specs:
        name, sep, rest = spec.partition(':')
        if not sep or not re.fullmatch(r'[A-Za-z0-9_.=+-]+', name):
            raise ConfigError(
                f'--variant {spec!r}: expected NAME:FIELD=VALUE,... (NAME: letters, '
                'digits, _.=+-; NAME: alone is the config as is)'
            )
        overrides = {}
        for item in filter(None, rest.split(',')):
            field, eq, value = item.partition('=')
            if not eq or not field:
                raise ConfigError(f'--variant {spec!r}: {item!r} is not FIELD=VALUE')
            overrides[field] = parse_value(value)
        if name in (v[0] for v in variants):
            raise ConfigError(f'--variant name {name!r} is used twice.')
        variants.append((name, overrides))
    return variants


def combinations(axes: list[Axis]) -> list[dict[str, Any]]:
    """Every combination, first axis slowest (the order of the table)."""
    fields = [a[0] for a in axes]
    return [dict(zip(fields, values)) for values in itertools.product(*(a[1] for a in axes))]


def run_name(overrides: dict[str, Any]) -> str:
    """Folder name of one combination, e.g. 'learning_rate=0.01,batch_size=16'."""
    parts = [f'{field.rsplit(".", 1)[-1]}={value}' for field, value in overrides.items()]
    return re.sub(r'[^A-Za-z0-9_.=,+-]', '_', ','.join(parts)) or 'base'


def get_field(config: ml_collections.ConfigDict, field: str) -> Any:
    node = config
    for part in field.split('.'):
        node = node[part]
    return node


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: dict[str, Any]
) -> ml_collections.ConfigDict:
    """A copy of `config` with the combination's values; unknown fields are an error."""
    config = config.copy_and_resolve_references()
    for field, value in overrides.items():
        *parents, leaf = field.split('.')
        node = config
        for part in parents:
            if part not in node:
                raise ConfigError(f'--grid field {field!r} does not exist in the config.')
            node = node[part]
        if leaf not in node:
            raise ConfigError(f'--grid field {field!r} does not exist in the config.')
        if isinstance(node[leaf], float) and isinstance(value, int):
            value = float(value)  # 1 for a float field means 1.0, as on the command line
        node[leaf] = value
    return config


# ------------------------------------------------------------------------------- the table

COLUMNS = ('val_accuracy', 'val_loss', 'test_accuracy', 'epochs', 'wall_time_s', 'status')


def result_row(
    name: str, overrides: dict[str, Any], results: dict | None, status: str
) -> dict[str, Any]:
    row = {'run': name, **overrides}
    val, test = (results or {}).get('val') or {}, (results or {}).get('test') or {}
    row.update(
        val_accuracy=val.get('accuracy', math.nan),
        val_loss=val.get('loss', math.nan),
        test_accuracy=test.get('accuracy', math.nan),
        epochs=(results or {}).get('epochs_trained'),
        wall_time_s=(results or {}).get('wall_time_s'),
        status=status,
    )
    return row


def best_row(rows: list[dict]) -> dict | None:
    """Highest validation accuracy (never test), ties broken by lower validation loss, then
    by table order."""
    scored = [r for r in rows if math.isfinite(r['val_accuracy'])]
    if not scored:
        return None
    return min(
        scored,
        key=lambda r: (
            -r['val_accuracy'],
            r['val_loss'] if math.isfinite(r['val_loss']) else math.inf,
        ),
    )


def write_csv(rows: list[dict], fields: list[str], path: Path) -> Path:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=['run', *fields, *COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return '-' if math.isnan(value) else f'{value:.4g}'
    return '-' if value is None else str(value)


def markdown(rows: list[dict], fields: list[str], best: dict | None) -> str:
    header = ['', 'run', *fields, *COLUMNS]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in rows:
        mark = '**best**' if best is not None and r['run'] == best['run'] else ''
        lines.append(
            '| '
            + ' | '.join(
                [mark, r['run'], *(_cell(r[f]) for f in fields), *(_cell(r[c]) for c in COLUMNS)]
            )
            + ' |'
        )
    return '\n'.join(lines)
