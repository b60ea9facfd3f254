"""Split-spec slicing: boundaries must follow TFDS's rule for any split size."""

import pytest

from ghostnet_jax.cli import errors
from ghostnet_jax.data import splits
from ghostnet_jax.data.errors import (
    DataError,
    InvalidSplitSpecError,
    SplitNotFoundError,
    user_message,
)


def _ref_pct(pct: int, n: int) -> int:
    # TFDS's documented rule for percent slices ('closest' rounding): round(pct * n / 100),
    # with Python's round (half to even); negative percents count from the end.
    b = round(pct * n / 100)
    return n + b if b < 0 else b


@pytest.mark.parametrize('n', [1, 5, 7, 10, 15, 99, 101, 1000, 50000])
@pytest.mark.parametrize(
    'a,b', [(None, 90), (90, None), (None, 33), (33, 67), (-10, None), (25, 75)]
)
def test_percent_slices_follow_tfds_rounding(n, a, b):
    spec = f'train[{"" if a is None else f"{a}%"}:{"" if b is None else f"{b}%"}]'
    start = 0 if a is None else _ref_pct(a, n)
    stop = n if b is None else _ref_pct(b, n)
    assert splits.absolute_ranges(spec, {'train': n}) == [('train', start, max(start, stop))]


@pytest.mark.parametrize(
    'spec,n,expected',
    [
        # Hand-computed.
        ('train[:90%]', 10, (0, 9)),
        ('train[90%:]', 10, (9, 10)),
        ('train[:25%]', 10, (0, 2)),  # 2.5 rounds to even -> 2
        ('train[:35%]', 10, (0, 4)),  # 3.5 rounds to even -> 4
        ('train[:50%]', 5, (0, 2)),
        ('train[:90%]', 50000, (0, 45000)),
        ('train[:5000]', 50000, (0, 5000)),
        ('train[10:20]', 50, (10, 20)),
        ('train[-3:]', 10, (7, 10)),
        ('train', 7, (0, 7)),
        ('test', 3, (0, 3)),
    ],
)
def test_hand_computed_boundaries(spec, n, expected):
    name = spec.split('[')[0]
    assert splits.absolute_ranges(spec, {name: n}) == [(name, *expected)]


def test_concatenated_specs():
    assert splits.absolute_ranges('train[:2]+test[-1:]', {'train': 10, 'test': 4}) == [
        ('train', 0, 2),
        ('test', 3, 4),
    ]
    assert splits.split_names('train[:2]+test[-1:]+train[5:]') == ['train', 'test']


def test_errors():
    with pytest.raises(SplitNotFoundError, match="'validation'.*'train' has 10 examples"):
        splits.absolute_ranges('validation', {'train': 10})
    # An unsatisfiable spec names the size of the split it asks too much of.
    with pytest.raises(InvalidSplitSpecError, match="'train' has 100 examples"):
        splits.absolute_ranges('train[:5000]', {'train': 100})
    with pytest.raises(InvalidSplitSpecError, match="'test' has 3 examples"):
        splits.absolute_ranges('train[:5]+test[2:9]', {'train': 100, 'test': 3})
    with pytest.raises(InvalidSplitSpecError, match=r'train\[:90%\]'):
        splits.split_names('train[::2]')
    assert issubclass(InvalidSplitSpecError, DataError)


def test_cli_contract_of_data_errors():
    # The CLIs exit with 4 on a data error (2: bad config, 3: non-finite loss) and print one
    # paragraph: the kind and the message, whatever line breaks it had.
    assert errors.classify(SplitNotFoundError('x'))[0] == errors.DATA == 4
    assert errors.classify(DataError('x'))[0] == 4
    text = user_message(SplitNotFoundError('Split folder /d/test not found;\n  the splits are x.'))
    assert (
        text == 'Data error (SplitNotFoundError): Split folder /d/test not found; the splits are x.'
    )
