"""Where the train step's time goes: a jax.profiler trace summed by op category.

XLA CPU records one trace event per executed HLO instruction (thunk), named like the
instruction. The compiled module's metadata names, for each instruction, the JAX op that
produced it together with the Flax module path (`.../blocks_3_0/ghost1/cheap_operation/mul`),
which is enough to say whether time went to a depthwise conv, a 1x1 conv, BatchNorm, ...
A fused instruction carries the metadata of its root op, so a fusion is charged to the
category of the op it ends in: the table is a guide to where time goes, not an exact split.
"""

from __future__ import annotations

import collections
import glob
import os
import re
from collections.abc import Callable

import jax

CATEGORIES = (
    'depthwise conv',
    '1x1 conv / matmul',
    'stem 3x3 conv',
    'BatchNorm',
    'squeeze-excite',
    'elementwise / other layers',
    'optimizer, loss, metrics',
)

_DEPTHWISE = {'cheap_operation', 'conv_dw', 'shortcut_dw'}
_POINTWISE = {'primary_conv', 'shortcut_pw', 'conv', 'conv_head', 'classifier'}
# `name = op(...), ... metadata={op_name="..."}`, one instruction per line of the HLO text.
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?op_name="([^"]*)"', re.MULTILINE)


def categorize(op_name: str) -> str:
    """The category of one HLO instruction from its JAX/Flax op_name metadata."""
    parts = op_name.split('/')
    model_at = next((i for i, p in enumerate(parts) if 'GhostNet' in p or 'Net)' in p), None)
    if model_at is None:
        return 'optimizer, loss, metrics'
    modules = parts[model_at + 1 :]
    if 'se' in modules:
        return 'squeeze-excite'
    # The innermost named module decides: a BN inside a block is BN, a conv is a conv.
    for name in reversed(modules):
        if name in _DEPTHWISE:
            return 'depthwise conv'
        if name in _POINTWISE:
            return '1x1 conv / matmul'
        if name == 'conv_stem':
            return 'stem 3x3 conv'
        if name.startswith('bn') or name.endswith('_bn'):
            return 'BatchNorm'
    return 'elementwise / other layers'


def direction(op_name: str) -> str:
    """'backward' for the gradient (JAX names it transpose(jvp(...))), 'forward' for the
    rest of the model, 'update' outside it."""
    if 'transpose(' in op_name:
        return 'backward'
    return 'forward' if 'jvp(' in op_name else 'update'


def instruction_categories(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> category, for every instruction with op_name metadata."""
    return {name: categorize(op) for name, op in _INSTRUCTION.findall(hlo_text)}


def instruction_directions(hlo_text: str) -> dict[str, str]:
    return {name: direction(op) for name, op in _INSTRUCTION.findall(hlo_text)}


def _events_by_instruction(trace_dir: str) -> dict[str, float]:
    """Summed duration (s) of the trace's events, by event name, over all threads."""
    from jax.profiler import ProfileData  # jaxlib's reader of .xplane.pb files

    files = sorted(
        glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True),
        key=os.path.getmtime,
    )
    if not files:
        raise RuntimeError(f'jax.profiler wrote no .xplane.pb under {trace_dir}.')
    totals: dict[str, float] = collections.defaultdict(float)
    for plane in ProfileData.from_file(files[-1]).planes:
        for line in plane.lines:
            if line.name == 'python':
                continue
            for event in line.events:
                totals[event.name] += event.duration_ns * 1e-9
    return totals


def profile_step(
    run_step: Callable[[], None], hlo_text: str, trace_dir: str, num_steps: int = 3
) -> dict:
    """Traces `num_steps` calls of `run_step` (each must wait for its result) into
    `trace_dir` and sums the time of the compiled step's instructions by category.

    Returns {'seconds': {category: s per step}, 'fraction': {category: share},
    'backward_fraction': {category: share of its time in the gradient},
    'unmatched_s': per-step time of events that are not instructions of `hlo_text`}.
    """
    with jax.profiler.trace(trace_dir):
        for _ in range(num_steps):
            run_step()
    return summarize_trace(trace_dir, hlo_text, num_steps)


def summarize_trace(trace_dir: str, hlo_text: str, num_steps: int) -> dict:
    """The per-step table of a trace of `num_steps` runs of the module `hlo_text`."""
    categories = instruction_categories(hlo_text)
    directions = instruction_directions(hlo_text)
    seconds = dict.fromkeys(CATEGORIES, 0.0)
    backward = dict.fromkeys(CATEGORIES, 0.0)
    unmatched = 0.0
    for name, total in _events_by_instruction(trace_dir).items():
        category = categories.get(name)
        if category is None:
            # Runtime bookkeeping events (thread pool regions, executor waits).
            unmatched += total
            continue
        seconds[category] += total / num_steps
        if directions[name] == 'backward':
            backward[category] += total / num_steps
    measured = sum(seconds.values()) or 1.0
    return {
        'seconds': {k: round(v, 4) for k, v in seconds.items()},
        'fraction': {k: round(v / measured, 3) for k, v in seconds.items()},
        'backward_fraction': {
            k: round(backward[k] / v, 3) if v else 0.0 for k, v in seconds.items()
        },
        'unmatched_s': round(unmatched / num_steps, 4),
        'trace_dir': trace_dir,
    }


def format_table(profile: dict) -> str:
    """A Markdown table of the profile, largest category first."""
    rows = sorted(profile['seconds'].items(), key=lambda kv: -kv[1])
    lines = [
        '| op category | ms per step | share | of it in the backward pass |',
        '|---|---|---|---|',
    ]
    lines += [
        f'| {k} | {v * 1000:.1f} | {profile["fraction"][k]:.0%} | '
        f'{profile["backward_fraction"][k]:.0%} |'
        for k, v in rows
    ]
    return '\n'.join(lines)
