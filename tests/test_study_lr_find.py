"""`python -m ghostnet_jax.lr_find`: the ramp, the divergence stop and the suggestion."""

import math
import re

import numpy as np
import pytest
import study_harness as s
import train_harness as h

from ghostnet_jax.study.lr_find import smooth, suggest


@h.job('study_lr_find')
def _lr_find(t, root):
    cli = s.Cli(root)
    return root / 'lr', cli.start(
        'lr_find',
        f'--workdir={root / "lr"}',
        '--min_lr=1e-4',
        '--max_lr=1e3',
        '--num_steps=40',
        log='lr',
    ).check(0)


def test_lr_find_end_to_end(trainer):
    out, proc = trainer.result('study_lr_find')
    result = s.read_json(out / 'lr_find.json')
    lrs = result['learning_rate']
    # The ramp, by hand: 1e-4 * 10 ** (7 * i / 39), one value per step actually run.
    np.testing.assert_allclose(lrs, [1e-4 * 10 ** (7 * i / 39) for i in range(len(lrs))], rtol=1e-5)
    # lr 1e3 blows SGD up long before the ramp ends.
    assert len(lrs) < 40 and (
        'diverged' in result['stop_reason'] or 'not finite' in result['stop_reason']
    )
    smoothed = result['smoothed_loss']
    best = int(np.nanargmin(smoothed))
    assert result['suggestion']['learning_rate'] == pytest.approx(lrs[best] / 10)
    printed = re.search(r'--config\.optimizer\.learning_rate=(\S+)', proc.output)
    assert printed and float(printed.group(1)) == pytest.approx(lrs[best] / 10, rel=1e-2)
    assert 'min smoothed loss / 10' in proc.output
    assert (out / 'lr_find.png').stat().st_size > 0


def test_smoothing_is_a_bias_corrected_ema():
    # beta 0.5: averages 0.5*1 = 0.5 -> /0.5 = 1; 0.25 + 0.5*3 = 1.75 -> /0.75
    assert smooth([1.0, 3.0], 0.5) == pytest.approx([1.0, 1.75 / 0.75])


def test_suggestion_is_a_tenth_of_the_minimum():
    lrs = [1e-3, 1e-2, 1e-1, 1.0]
    s_ = suggest(lrs, [2.0, 1.0, 0.5, 3.0])
    assert s_['learning_rate'] == pytest.approx(1e-2) and s_['min_loss_lr'] == 1e-1
    assert suggest([1e-3, 1e-2], [1.0, math.nan])['learning_rate'] is None
