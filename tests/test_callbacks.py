import json

import pytest

from ghostnet_jax.training.callbacks import (
    EarlyStopping,
    ReduceLROnPlateau,
    callbacks_from_config,
)


def _run_es(es, values, key='val_accuracy'):
    """Returns the epoch at which training stops (None if it never does)."""
    for epoch, v in enumerate(values):
        if es.update(epoch, {key: v, 'val_loss': 0.0}).stop:
            return epoch
    return None


def test_early_stopping_keras_docstring_example():
    # Keras docs: monitor='loss', patience=3, loss never improves -> only 4 epochs run.
    es = EarlyStopping(monitor='loss', mode='min', patience=3)
    assert _run_es(es, [1.0] * 10, key='loss') == 3


def test_early_stopping_counts_consecutive_non_improvements():
    es = EarlyStopping(patience=2)
    # e0 best, e1 better, e2 equal (not an improvement, wait 1), e3 worse (wait 2) -> stop at 3.
    assert _run_es(es, [0.5, 0.6, 0.6, 0.55, 0.9]) == 3
    assert es.best == 0.6 and es.best_epoch == 1 and es.stopped_epoch == 3


def test_early_stopping_improvement_resets_wait():
    es = EarlyStopping(patience=2)
    # e1 w1, e2 best (w0), e3 w1, e4 best (w0), e5 w1, e6 w2 -> stop at 6.
    assert _run_es(es, [0.5, 0.4, 0.6, 0.5, 0.7, 0.6, 0.6]) == 6


def test_early_stopping_min_delta_and_patience_zero():
    es = EarlyStopping(patience=1, min_delta=0.05)
    # 0.54 - 0.05 = 0.49 is not > 0.5 -> no improvement; patience 1 -> stop at epoch 1.
    assert _run_es(es, [0.5, 0.54, 0.9]) == 1
    es = EarlyStopping(patience=1, min_delta=0.05)
    assert _run_es(es, [0.5, 0.56, 0.6]) == 2
    # patience=0: Keras never stops at epoch 0, then stops at the first non-improvement.
    assert _run_es(EarlyStopping(patience=0), [0.5, 0.6, 0.6]) == 2


def test_bad_monitor_key_lists_available():
    with pytest.raises(KeyError, match=r"val_acc.*available keys: \['loss', 'val_accuracy'\]"):
        EarlyStopping(monitor='val_acc').update(0, {'val_accuracy': 0.1, 'loss': 1.0})
    with pytest.raises(KeyError, match='val_loss'):
        ReduceLROnPlateau().update(0, {'val_accuracy': 0.1})


def _run_rp(rp, values, key='val_loss', base_lr=None):
    out = []
    for epoch, v in enumerate(values):
        d = rp.update(epoch, {key: v}, base_lr=base_lr)
        out.append((d.scale, d.reduced))
    return out


def _reduced_at(trace):
    return [e for e, (_, r) in enumerate(trace) if r]


def test_reduce_on_plateau_patience():
    rp = ReduceLROnPlateau(factor=0.5, patience=2, min_delta=0.0)
    # e0, e1 improve; e2 w1, e3 w2 -> reduce; e4 w1, e5 w2 -> reduce; e6 improves; e7, e8 -> reduce.
    trace = _run_rp(rp, [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8])
    assert _reduced_at(trace) == [3, 5, 8]
    assert [s for s, _ in trace] == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]


def test_reduce_on_plateau_cooldown():
    flat = [1.0] * 9
    # cooldown=2: reduce at e2 (counter 2); e3 counter->1, ignored; e4 counter->0 and
    # already counts (wait 1); e5 wait 2 -> reduce; ... -> 2, 5, 8.
    assert _reduced_at(_run_rp(ReduceLROnPlateau(patience=2, cooldown=2, min_delta=0.0), flat)) == [
        2,
        5,
        8,
    ]
    assert _reduced_at(_run_rp(ReduceLROnPlateau(patience=2, cooldown=0, min_delta=0.0), flat)) == [
        2,
        4,
        6,
        8,
    ]
    # Keras quirk: cooldown=1 behaves exactly like cooldown=0.
    assert _reduced_at(_run_rp(ReduceLROnPlateau(patience=2, cooldown=1, min_delta=0.0), flat)) == [
        2,
        4,
        6,
        8,
    ]


def test_reduce_on_plateau_min_scale_and_min_lr():
    rp = ReduceLROnPlateau(factor=0.5, patience=1, min_scale=0.2, min_delta=0.0)
    trace = _run_rp(rp, [1.0] * 6)
    assert trace == [
        (1.0, False),
        (0.5, True),
        (0.25, True),
        (0.2, True),
        (0.2, False),
        (0.2, False),
    ]
    assert rp.wait == 2  # as in Keras, wait keeps growing once the floor is reached

    # min_lr on the effective lr: base 0.1, floor 0.03 -> scales 0.5 (lr .05), 0.3 (lr .03), stop.
    rp = ReduceLROnPlateau(factor=0.5, patience=1, min_lr=0.03, min_delta=0.0)
    trace = _run_rp(rp, [1.0] * 5, base_lr=0.1)
    assert _reduced_at(trace) == [1, 2]
    assert trace[-1][0] == pytest.approx(0.3)
    with pytest.raises(ValueError, match='base_lr'):
        _run_rp(ReduceLROnPlateau(patience=1, min_lr=0.01), [1.0, 1.0])


def test_reduce_on_plateau_auto_mode_and_min_delta():
    rp = ReduceLROnPlateau(monitor='val_accuracy', factor=0.5, patience=1, min_delta=0.01)
    assert rp.mode == 'max'
    # 0.505 is not > 0.5 + 0.01 -> reduce at e1; 0.52 is -> no reduce at e2.
    trace = _run_rp(rp, [0.5, 0.505, 0.52], key='val_accuracy')
    assert _reduced_at(trace) == [1]
    with pytest.raises(ValueError):
        ReduceLROnPlateau(factor=1.0)


@pytest.mark.parametrize('cut', range(0, 12))
def test_state_dict_round_trip_resumes_identically(cut):
    losses = [1.0, 0.9, 0.95, 0.97, 0.9, 0.85, 0.86, 0.87, 0.88, 0.89, 0.9, 0.91]
    accs = [0.1, 0.2, 0.2, 0.3, 0.25, 0.25, 0.26, 0.24, 0.2, 0.2, 0.2, 0.2]
    make = lambda: (
        EarlyStopping(patience=3),
        ReduceLROnPlateau(patience=2, cooldown=2, min_delta=0.0),
    )

    def run(pair, epochs):
        es, rp = pair
        return [
            (
                es.update(e, {'val_accuracy': accs[e], 'val_loss': losses[e]}),
                rp.update(e, {'val_accuracy': accs[e], 'val_loss': losses[e]}),
            )
            for e in epochs
        ]

    full = run(make(), range(12))
    first = make()
    head = run(first, range(cut))
    saved = json.loads(json.dumps({'es': first[0].state_dict(), 'rp': first[1].state_dict()}))
    resumed = make()
    resumed[0].load_state_dict(saved['es'])
    resumed[1].load_state_dict(saved['rp'])
    assert head + run(resumed, range(cut, 12)) == full
    assert any(d.stop for d, _ in full) and any(
        p.reduced for _, p in full
    )  # the script exercises both


def test_load_state_dict_rejects_other_monitor():
    state = EarlyStopping(monitor='val_accuracy').state_dict()
    with pytest.raises(ValueError, match='monitor'):
        EarlyStopping(monitor='val_loss', mode='min').load_state_dict(state)


def test_from_config():
    from ghostnet_jax.configs import default

    cfg = default.get_config().callbacks
    assert callbacks_from_config(cfg) == (None, None)
    cfg.early_stopping.enabled = True
    cfg.reduce_lr_on_plateau.enabled = True
    cfg.reduce_lr_on_plateau.patience = 7
    es, rp = callbacks_from_config(cfg)
    assert (
        es.monitor == 'val_accuracy' and es.patience == 5 and rp.patience == 7 and rp.mode == 'min'
    )
