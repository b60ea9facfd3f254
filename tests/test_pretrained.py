"""init_from of another architecture: taken where the config leaves model.name empty
(configs/finetune.py), refused in one paragraph (exit 5) where it names another."""

import json

import jax.numpy as jnp
import pytest

from ghostnet_jax.configs import default, finetune
from ghostnet_jax.training.checkpoints import CheckpointError
from ghostnet_jax.training.launch import check_config
from ghostnet_jax.training.pretrained import (
    INFO_FILE,
    INFO_FORMAT,
    merge_pretrained,
    pretrained_model_name,
)


def _run_workdir(root, model_name):
    """A workdir as the trainer leaves it, as far as init_from's name lookup reads it."""
    (root / 'checkpoints' / '12' / 'state').mkdir(parents=True)
    (root / 'config.json').write_text(json.dumps({'model': {'name': model_name}}))
    return root


def _conversion(root, model_name):
    root.mkdir()
    (root / INFO_FILE).write_text(json.dumps({'format': INFO_FORMAT, 'model': model_name}))
    return root


def _config(init_from, model_name):
    config = default.get_config()
    config.init_from = str(init_from)
    config.model.name = model_name
    return config


def test_the_architecture_is_read_from_a_run_any_of_its_folders_or_a_conversion(tmp_path):
    run = _run_workdir(tmp_path / 'run', 'ghostnet_cifar_050')
    for path in (run, run / 'checkpoints', run / 'checkpoints' / '12'):
        assert pretrained_model_name(str(path)) == 'ghostnet_cifar_050', path
    assert pretrained_model_name(str(_conversion(tmp_path / 'conv', 'ghostnet_100'))) == (
        'ghostnet_100'
    )
    # A step directory copied out of its run records no architecture here.
    lone = tmp_path / 'copied' / '12'
    (lone / 'state').mkdir(parents=True)
    assert pretrained_model_name(str(lone)) is None


def test_an_empty_model_name_takes_init_froms_architecture(tmp_path, caplog):
    run = _run_workdir(tmp_path / 'run', 'ghostnet_cifar_050')
    config = _config(run, '')
    with caplog.at_level('INFO'):
        check_config(config)
    assert config.model.name == 'ghostnet_cifar_050'
    assert 'holds ghostnet_cifar_050: training that architecture' in caplog.text
    # The fine-tuning recipe leaves it empty, so a conversion of any GhostNet fine-tunes.
    recipe = finetune.get_config()
    assert recipe.model.name == ''
    recipe.init_from = str(_conversion(tmp_path / 'conv', 'ghostnetv2_100'))
    check_config(recipe)
    assert recipe.model.name == 'ghostnetv2_100'


def test_another_architecture_than_the_configs_is_refused_naming_both_and_the_flag(tmp_path):
    run = _run_workdir(tmp_path / 'run', 'ghostnet_cifar_050')
    with pytest.raises(CheckpointError) as e:
        check_config(_config(run, 'ghostnet_cifar_100'))
    message = str(e.value)
    for needle in (
        'ghostnet_cifar_050',
        'ghostnet_cifar_100',
        '--config.model.name=ghostnet_cifar_050',
    ):
        assert needle in message, message
    # Same architecture: accepted unchanged.
    same = _config(run, 'ghostnet_cifar_050')
    check_config(same)
    assert same.model.name == 'ghostnet_cifar_050'


def test_an_empty_name_with_a_checkpoint_that_records_none_asks_for_one(tmp_path):
    lone = tmp_path / 'copied' / '12'
    (lone / 'state').mkdir(parents=True)
    with pytest.raises(CheckpointError, match='--config.model.name=NAME'):
        check_config(_config(lone, ''))
    # Without init_from an empty name is a plain config error (exit 2), naming the choices.
    config = default.get_config()
    config.model.name = ''
    with pytest.raises(ValueError, match='model.name'):
        check_config(config)


def test_weights_missing_from_the_checkpoint_are_a_checkpoint_error():
    fresh = {'params': {'a': jnp.zeros(2), 'b': jnp.zeros(3)}, 'batch_stats': {}}
    with pytest.raises(CheckpointError, match="lacks 1 variables.*\\['b'\\]"):
        merge_pretrained(fresh, {'params': {'a': jnp.ones(2)}, 'batch_stats': {}})
    merged = merge_pretrained(fresh, {'params': {'a': jnp.ones(2), 'b': jnp.ones(3)}})
    assert float(merged['params']['b'].sum()) == 3.0
