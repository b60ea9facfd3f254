"""TFDS split-spec slicing (``train[:90%]``, ``train[10:20]``, ``a+b``) for any source.

The boundaries are computed by TFDS's own instruction code, so percent rounding
(``round()``, i.e. banker's rounding of ``pct * n / 100``) is identical to what
``tfds.data_source(split=...)`` would select from a split of the same size.
"""

from __future__ import annotations

from collections.abc import Mapping

from tensorflow_datasets.core import splits as tfds_splits

from ghostnet_jax.data.errors import InvalidSplitSpecError, SplitNotFoundError


def split_names(spec: str) -> list[str]:
    """Names of the base splits a spec reads, in order (``'train[:5]+test'`` -> train, test)."""
    try:
        tfds_splits.AbstractSplit.from_spec(spec)  # Validates the syntax with TFDS's parser.
    except ValueError as e:
        raise InvalidSplitSpecError(
            f'Invalid split spec {spec!r}: {" ".join(str(e).split())} Use TFDS slicing syntax, '
            "e.g. 'train', "
            "'train[:90%]', 'train[90%:]', 'train[10:20]', 'train[:100]+test'."
        ) from e
    names: list[str] = []
    for part in str(spec).split('+'):
        name = part.strip().split('[')[0]
        if name not in names:
            names.append(name)
    return names


def absolute_ranges(spec: str, sizes: Mapping[str, int]) -> list[tuple[str, int, int]]:
    """Resolves ``spec`` to ``[(split_name, start, stop), ...]`` given each base split's size.

    Raises SplitNotFoundError if a named split is missing from ``sizes`` and
    InvalidSplitSpecError, naming the split sizes, if the slice does not fit (e.g.
    ``train[:5000]`` of 100 examples).
    """
    infos = {
        name: tfds_splits.SplitInfo(name=name, shard_lengths=[int(n)], num_bytes=0)
        for name, n in sizes.items()
    }
    for name in split_names(spec):
        if name not in infos:
            raise SplitNotFoundError(
                f'Split {name!r} (from spec {spec!r}) not found; available: {_describe(sizes)}.'
            )
    try:
        instructions = tfds_splits.AbstractSplit.from_spec(spec).to_absolute(infos)
    except ValueError as e:
        raise InvalidSplitSpecError(
            f'Split spec {spec!r} cannot be satisfied: '
            f'{_describe({n: sizes[n] for n in split_names(spec)})} ({e}).'
        ) from e
    ranges = []
    for instr in instructions:
        n = int(sizes[instr.splitname])
        start = 0 if instr.from_ is None else instr.from_
        stop = n if instr.to is None else instr.to
        ranges.append((instr.splitname, start, max(start, stop)))
    return ranges


def _describe(sizes: Mapping[str, int]) -> str:
    """``'train' has 48 examples, 'test' has 10 examples`` (what a user needs to fix a spec)."""
    return (
        ', '.join(f'{name!r} has {int(n)} examples' for name, n in sorted(sizes.items()))
        or 'no splits'
    )
