"""Low-resolution first epochs (config.data.low_res): which epochs, the downscaled batches,
the config errors, and how a time budget counts them. The trainer end to end is in
test_train_time_budget.py (a budgeted low-res run, interrupted and resumed across the
switch, against one trained straight through)."""

import dataclasses
import time

import jax
import ml_collections
import numpy as np
import pytest

from ghostnet_jax import data as D
from ghostnet_jax.configs import default
from ghostnet_jax.training.config_checks import ConfigError, check_low_res_size, validate_config
from ghostnet_jax.training.low_res import low_res_epoch_choices, low_res_epochs, train_image_size
from ghostnet_jax.training.time_budget import (
    SAFETY_FRACTION,
    BudgetPlan,
    first_fit,
    fit_epochs,
    refit_after_epoch,
    refit_message,
)


def test_which_epochs_train_small():
    assert [low_res_epochs(n, 0.5) for n in (1, 2, 3, 10, 11)] == [1, 1, 1, 5, 5]
    assert low_res_epochs(20, 0.01) == 1  # at least the first (the refit's epoch)
    assert low_res_epochs(4, 1.0) == 4 and low_res_epochs(4, 0.0) == 0
    cfg = ml_collections.ConfigDict(dict(size=24, epochs_fraction=0.5))
    assert [train_image_size(cfg, e, 6) for e in range(6)] == [24, 24, 24, None, None, None]
    cfg.size = 0
    assert train_image_size(cfg, 0, 6) is None


def test_the_fraction_rounds_as_the_exact_product_would():
    # 0.29 * 100 is 28.999999999999996 in floating point; the share means 29.
    assert low_res_epochs(100, 0.29) == 29
    assert low_res_epoch_choices(100, 0.29) == (29,)
    assert low_res_epoch_choices(19, 0.5) == (9, 10)
    assert low_res_epoch_choices(20, 0.6) == (12,)  # 0.6 * 20 = 12.000000000000002
    assert low_res_epoch_choices(3, 0.1) == (1,)  # at least one, both ways
    assert low_res_epoch_choices(7, 0.0) == (0,)
    # The fraction the budget writes to config.json, k / n, gives back exactly k.
    for n in range(1, 120):
        for k in range(1, n + 1):
            assert low_res_epochs(n, k / n) == k, (k, n)


N, H = 16, 8
RNG = np.random.default_rng(0)
SPLIT = D.ArraySplit(
    RNG.integers(0, 256, (N, H, H, 3), dtype=np.uint8),
    np.arange(N, dtype=np.int32),
    tuple(f'c{i}' for i in range(N)),
    'synthetic',
)
MEAN, STD = np.array([100.0, 120.0, 140.0], np.float32), np.array([50.0, 60.0, 70.0], np.float32)


def _data(aug):
    mesh = jax.make_mesh((1,), ('data',), devices=jax.devices()[:1])
    return D.DeviceTrainData(SPLIT, mesh, 8, seed=0, augment=aug, mean=MEAN, std=STD)


def test_a_small_batch_is_the_same_augmented_batch_downscaled():
    data = _data(D.AugmentConfig(crop_padding=2, flip=True))
    eb = data.epoch(1)
    full, small = data.batch(eb, 1), data.batch(eb, 1, size=4)
    assert small['image'].shape == (8, 4, 4, 3) and full['image'].shape == (8, H, H, 3)
    np.testing.assert_array_equal(np.asarray(small['label']), np.asarray(full['label']))
    # 8 -> 4 with antialiasing: each output pixel is a weighted mean of a 4x4 neighbourhood
    # (triangle filter), so the image mean is kept up to the border weights.
    expected = jax.image.resize(full['image'], (8, 4, 4, 3), 'linear', antialias=True)
    np.testing.assert_allclose(np.asarray(small['image']), np.asarray(expected), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(small['image']).mean((1, 2)), np.asarray(full['image']).mean((1, 2)), atol=0.15
    )
    # The no-op size leaves the batch exactly as it was.
    np.testing.assert_array_equal(
        np.asarray(data.batch(eb, 1, size=H)['image']), np.asarray(full['image'])
    )
    with pytest.raises(ValueError, match='size 9'):
        data.batch(eb, 1, size=9)


def test_small_batches_with_mixing_keep_soft_labels():
    data = _data(D.AugmentConfig(mixup_alpha=1.0))
    b = data.batch(data.epoch(0), 0, size=4)
    assert b['image'].shape == (8, 4, 4, 3)
    np.testing.assert_allclose(np.asarray(b['label']).sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    'size, fraction, match',
    [
        (1, 0.5, 'at least 2'),
        (-4, 0.5, 'at least 2'),
        (24, 0.0, 'in \\(0, 1\\]'),
        (24, 1.5, 'in \\(0, 1\\]'),
    ],
)
def test_bad_low_res_values_are_config_errors(size, fraction, match):
    config = default.get_config()
    config.data.low_res.size, config.data.low_res.epochs_fraction = size, fraction
    with pytest.raises(ConfigError, match=match):
        validate_config(config, default.get_config())


def test_a_low_size_not_below_the_images_is_refused():
    config = default.get_config()
    config.data.low_res.size = 32
    with pytest.raises(ConfigError, match='smaller than the training images \\(32x32\\)'):
        check_low_res_size(config, (32, 32, 3))
    config.data.low_res.size = 24
    check_low_res_size(config, (32, 32, 3))


def test_fit_counts_small_epochs_at_their_own_step_and_one_compile_per_size():
    # 600 s * 0.97 = 582, minus setup 20 and final evaluation 10: 552 s. Full epochs cost
    # 100 * 0.5 + 5 = 55 s, small ones 100 * 0.25 + 5 = 30 s, and two sizes two compiles
    # of 30 s. 11 epochs (5 small): 60 + 150 + 330 = 540 fits; 12 (6 small): 570 does not.
    # Without the small epochs the same budget fits 9 (test_time_budget).
    assert fit_epochs(
        600, 20, 30, 0.5, 100, 5, 10, safety=0.03, low_res_step_s=0.25, low_res_fraction=0.5
    ) == (11, 5)
    assert fit_epochs(600, 20, 30, 0.5, 100, 5, 10, safety=0.03) == (9, 0)


@pytest.mark.parametrize('left, fitted', [(630, (13, 6)), (610, (13, 7)), (590, (12, 6))])
def test_the_fit_rounds_the_fraction_up_when_only_that_fits_one_more_epoch(left, fitted):
    # The same epochs as above, no reserve: budget 20 + 10 + left. 13 epochs cost
    # 60 + 6 * 30 + 7 * 55 = 625 s with 6 small, 600 s with 7 (0.5 * 13 rounded up);
    # 12 cost 570 (6 small), 14 cost 655 at best (7 small).
    got = fit_epochs(
        20 + 10 + left,
        20,
        30,
        0.5,
        100,
        5,
        10,
        safety=0.0,
        low_res_step_s=0.25,
        low_res_fraction=0.5,
    )
    assert got == fitted


def _steps(times):
    return lambda n: list(times)


def test_plan_times_both_sizes_and_predicts_within_the_budget():
    plan = first_fit(
        10.0,
        time.time(),
        steps_per_epoch=100,
        run_steps=_steps([40.0, 0.5, 0.5, 0.5, 0.5, 0.5]),
        run_validation=lambda: None,
        val_examples=1000,
        test_examples=0,
        run_low_res_steps=_steps([30.0, 0.3, 0.2, 0.3, 0.3, 0.3]),
        low_res_fraction=0.5,
    )
    assert plan.step_s == 0.5 and plan.low_res_step_s == 0.3 and plan.compile_s == 40.0
    # (582 - 80 compiles) / epochs of 30 s (small) and 50 s (full): 12 (6 + 6) = 480 fits,
    # 13 (6 + 7) = 530 does not.
    assert plan.num_epochs == 12
    assert plan.predicted_s <= 600 * (1 - SAFETY_FRACTION)
    assert BudgetPlan.from_json(plan.to_json()) == plan


def _plan(**kw):
    return BudgetPlan(
        budget_s=3600.0,
        setup_s=120.0,
        compile_s=37.0,
        step_s=0.6,
        val_eval_s=7.0,
        final_eval_s=10.0,
        steps_per_epoch=351,
        num_epochs=20,
        calibrated_step_s=0.6,
        low_res_step_s=0.3,
        low_res_fraction=0.5,
        **kw,
    )


def _refit(before, **kw):
    """The refit after epoch 1 (small) as the trainer makes it: the loop's small step
    (0.36 s, the calibration said 0.3) and the full-size step timed then (0.756 s)."""
    return refit_after_epoch(
        before,
        epochs_done=1,
        elapsed_s=300.0,
        step_s=0.756,
        val_eval_s=7.0,
        must_recompile=True,
        length_matters=True,
        low_res_step_s=0.36,
        **kw,
    )


def test_refit_after_a_small_epoch_uses_both_measured_steps():
    # Left: 3492 - 300 - 10 = 3182 s, two compiles (74 s). n epochs, k = n // 2 small:
    # 1 done, (k - 1) * (126.36 + 7) + (n - k) * (265.356 + 7).
    plan = _refit(_plan())
    assert plan.low_res_step_s == pytest.approx(0.36)
    assert plan.step_s == pytest.approx(0.756)

    def cost(n):
        k = max(1, n // 2)
        return 74 + (k - 1) * (351 * 0.36 + 7) + (n - k) * (351 * 0.756 + 7)

    # 16 (8 small): 74 + 7 * 133.36 + 8 * 272.356 = 3186.4 does not fit 3182;
    # 15 (7 small): 74 + 6 * 133.36 + 8 * 272.356 = 3053.0 does.
    best = max(n for n in range(1, 60) if cost(n) <= 3182)
    assert plan.num_epochs == best == 15
    assert plan.predicted_s == pytest.approx(300 + cost(best) + 10)
    assert plan.predicted_s <= 3600 * (1 - SAFETY_FRACTION)


def test_a_refit_that_rounds_up_keeps_the_count_in_the_plan_not_the_config():
    # As above with a 3800 s budget: left 3800 * 0.97 - 300 - 10 = 3376 s. 17 epochs cost
    # 74 + 8 * 133.36 + 8 * 272.356 = 3319.7 s with 9 small (0.5 * 17 rounded up) and
    # 74 + 7 * 133.36 + 9 * 272.356 = 3458.7 s with 8; 18 cost 3592.1 s.
    before = dataclasses.replace(_plan(), budget_s=3800.0)
    plan = _refit(before)
    assert (plan.num_epochs, plan.small_epochs) == (17, 9)
    assert plan.predicted_s == pytest.approx(300 + 3319.7 + 10, abs=0.1)
    assert 'the first 9 at the low size, epochs_fraction 0.5 rounded up' in refit_message(
        before, plan
    )
    low_res = ml_collections.ConfigDict(dict(size=24, epochs_fraction=0.5))
    sizes = [train_image_size(low_res, e, plan.num_epochs, plan.small_epochs) for e in range(17)]
    assert sizes == [24] * 9 + [None] * 8
    # The fraction alone would have said 8.
    assert [train_image_size(low_res, e, 17) for e in range(17)].count(24) == 8
    assert BudgetPlan.from_json(plan.to_json()) == plan


def test_the_refit_log_names_both_measured_steps():
    before = _plan()
    message = refit_message(before, _refit(before))
    assert message.startswith(
        "Time budget refit after epoch 1: the loop's step took 0.756 s "
        '(calibration: 0.600 s), 0.360 s at the low size (calibration: '
        '0.300 s)'
    )
    assert '-> 15 epochs (was 20), the first 7 at the low size' in message
    plain = BudgetPlan(
        budget_s=3600.0,
        setup_s=120.0,
        compile_s=37.0,
        step_s=0.6,
        val_eval_s=7.0,
        final_eval_s=10.0,
        steps_per_epoch=351,
        num_epochs=20,
        calibrated_step_s=0.6,
    )
    after = refit_after_epoch(
        plain,
        epochs_done=1,
        elapsed_s=300.0,
        step_s=0.65,
        val_eval_s=7.0,
        must_recompile=True,
        length_matters=True,
    )
    text = refit_message(plain, after)
    assert "the loop's step took 0.650 s (calibration: 0.600 s), validation" in text


def test_a_sweep_of_a_low_res_config_trains_its_runs_one_by_one():
    # The vectorized sweep has no per-epoch image size, so it must not take such a config.
    from ghostnet_jax.study.vectorized import why_not_vectorized

    config = default.get_config()
    assert why_not_vectorized(config) is None
    config.data.low_res.size = 24
    assert (
        why_not_vectorized(config) == 'data.low_res trains the first epochs at another image size'
    )


def test_a_resume_with_another_low_res_setting_warns(caplog):
    from ghostnet_jax.training.resume_checks import check_resume, run_identity

    config = default.get_config()
    config.data.low_res.size = 24
    saved = run_identity(config)
    with caplog.at_level('WARNING'):
        check_resume(saved, run_identity(config), [])
    assert 'data.low_res' not in caplog.text
    config.data.low_res.size = 20
    with caplog.at_level('WARNING'):
        check_resume(saved, run_identity(config), [])
    assert 'Resuming with a changed data.low_res' in caplog.text
