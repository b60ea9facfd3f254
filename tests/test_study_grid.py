"""Grid and variant parsing, per-run configs and the table's best row (pure, no training)."""

import math

import pytest

from ghostnet_jax.configs import smoke
from ghostnet_jax.study import grid as G
from ghostnet_jax.study.vectorized import without_vector_fields


def test_grid_parsing_and_combinations():
    axes = G.parse_grid(['optimizer.learning_rate=0.001,0.1', 'batch_size=16,32'])
    assert axes == [('optimizer.learning_rate', [0.001, 0.1]), ('batch_size', [16, 32])]
    combos = G.combinations(axes)
    assert len(combos) == 4 and combos[1] == {'optimizer.learning_rate': 0.001, 'batch_size': 32}
    assert G.run_name(combos[1]) == 'learning_rate=0.001,batch_size=32'
    for bad in (['learning_rate'], ['x=1', 'x=2']):
        with pytest.raises(ValueError):
            G.parse_grid(bad)


def test_variants():
    variants = G.parse_variants(['base:', 'aug:data.augment.cutout=8,ema_decay=0.99'])
    assert variants == [('base', {}), ('aug', {'data.augment.cutout': 8, 'ema_decay': 0.99})]
    for bad in (['no_colon'], ['a:x'], ['a:', 'a:']):
        with pytest.raises(ValueError):
            G.parse_variants(bad)


def test_overrides_keep_field_types_and_reject_unknown_fields():
    config = smoke.get_config()
    c = G.apply_overrides(config, {'optimizer.learning_rate': 1, 'batch_size': 16})
    assert c.optimizer.learning_rate == 1.0 and isinstance(c.optimizer.learning_rate, float)
    assert c.batch_size == 16 and config.batch_size == 8  # the base is not modified
    with pytest.raises(ValueError):
        G.apply_overrides(config, {'optimizer.lr': 0.1})


def test_vectorizable_runs_group_by_everything_else():
    config = smoke.get_config()
    lr = G.apply_overrides(
        config,
        {
            'optimizer.learning_rate': 0.3,
            'seed': 3,
            'model.dropout_rate': 0.5,
            'label_smoothing': 0.1,
            'optimizer.weight_decay': 0.0,
        },
    )
    assert without_vector_fields(lr) == without_vector_fields(config)
    for field, value in (('batch_size', 16), ('data.augment.cutout', 8), ('ema_decay', 0.9)):
        assert without_vector_fields(
            G.apply_overrides(config, {field: value})
        ) != without_vector_fields(config), field


def test_best_row_is_highest_validation_accuracy_then_lowest_loss():
    rows = [
        G.result_row(
            name, {}, {'val': {'accuracy': acc, 'loss': loss}, 'test': {'accuracy': test}}, 'done'
        )
        for name, acc, loss, test in (
            ('a', 0.8, 0.5, 0.99),
            ('b', 0.9, 0.6, 0.1),
            ('c', 0.9, 0.4, 0.2),
        )
    ]
    assert G.best_row(rows)['run'] == 'c'  # never 'a', whose test accuracy is highest
    md = G.markdown(rows, [], G.best_row(rows))
    assert next(line for line in md.splitlines() if '**best**' in line).split('|')[2].strip() == 'c'
    diverged = G.result_row('d', {}, {'status': 'diverged'}, 'diverged')
    assert math.isnan(diverged['val_accuracy']) and G.best_row([diverged]) is None


def test_a_finished_run_of_this_release_is_recognised_after_a_field_was_removed(tmp_path):
    """A run's config.json keeps a field this version no longer has, unset: rerunning the
    sweep takes the run as done; one that set it, or another config, is not."""
    import json

    from ghostnet_jax.study.sweep import SweepError, _config_text, finished

    config = smoke.get_config()
    saved = json.loads(_config_text(config))
    saved['optimizer']['a_removed_field'] = []
    (tmp_path / 'config.json').write_text(json.dumps(saved))
    (tmp_path / 'results.json').write_text(json.dumps({'val': {'accuracy': 0.5}}))
    assert finished(tmp_path, config) == {'val': {'accuracy': 0.5}}
    other = config.copy_and_resolve_references()
    other.seed = 3
    with pytest.raises(SweepError):
        finished(tmp_path, other)
    saved['optimizer']['a_removed_field'] = [40, 18]
    (tmp_path / 'config.json').write_text(json.dumps(saved))
    with pytest.raises(SweepError):
        finished(tmp_path, config)
