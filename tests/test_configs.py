"""Every config in configs/ is a valid experiment record: it loads, validates, names a real
model, and its docstring carries a command."""

import importlib.util
from pathlib import Path

import pytest

from ghostnet_jax.configs import default
from ghostnet_jax.training.config_checks import ConfigError, validate_config
from ghostnet_jax.training.metrics_log import flat_scalars

CONFIG_FILES = sorted(
    p for p in (Path(__file__).parents[1] / 'configs').glob('*.py') if p.name != '__init__.py'
)


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_issue_configs_exist():
    assert {p.stem for p in CONFIG_FILES} >= {
        'default',
        'original_study',
        'ghost_vgg16',
        'ghost_resnet56',
        'smoke',
        'cpu_hour',
    }


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: p.stem)
def test_config_validates_and_documents_its_command(path):
    module = _load(path)
    validate_config(module.get_config(), default.get_config())
    assert 'python -m ghostnet_jax.train' in module.__doc__


def test_original_study_matches_the_study():
    config = _load(next(p for p in CONFIG_FILES if p.stem == 'original_study')).get_config()
    assert (
        config.optimizer.name,
        config.optimizer.learning_rate,
        config.batch_size,
        config.num_epochs,
    ) == ('adam', 1e-3, 32, 20)
    assert config.callbacks.early_stopping.patience == 5
    assert (
        config.callbacks.reduce_lr_on_plateau.factor,
        config.callbacks.reduce_lr_on_plateau.patience,
    ) == (0.5, 3)


@pytest.mark.parametrize(
    'field,value,expected',
    [
        ('model.name', 'ghostnet_999', 'ghostnet_cifar_100'),
        ('optimizer.name', 'rmsprop', 'adamw'),
        ('parallel', 'spmd', 'pmap'),
        ('dtype', 'float16', 'bfloat16'),
        ('data.source', 'cifar10', 'tfds:NAME'),
        ('batch_size', 0, 'batch_size'),
        ('callbacks.early_stopping.monitor', 'val_acc', 'val_accuracy'),
    ],
)
def test_bad_values_name_the_valid_choices(field, value, expected):
    config = default.get_config()
    *parents, leaf = field.split('.')
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ConfigError, match=expected):
        validate_config(config, default.get_config())


def test_unknown_field_is_named_with_valid_ones():
    config = default.get_config()
    config.optimizer.unlock()
    config.optimizer.momentun = 0.9
    with pytest.raises(ConfigError, match=r'optimizer\.momentun.*momentum'):
        validate_config(config, default.get_config())


def test_study_net_and_version_comparison_configs():
    """The study's net on the study's recipe (only the network, its dropout and the
    evaluation batch, which bounds memory, differ), and the v1/v2/v3 comparison: one
    recipe, one budget, only the network differs."""
    study = _load(next(p for p in CONFIG_FILES if p.stem == 'original_study')).get_config()
    net = _load(next(p for p in CONFIG_FILES if p.stem == 'original_study_net')).get_config()
    assert net.model.name == 'ghost_study_net' and net.model.dropout_rate == 0.0
    assert net.eval_batch_size < study.eval_batch_size
    net.model.name, net.model.dropout_rate = study.model.name, study.model.dropout_rate
    net.eval_batch_size = study.eval_batch_size
    assert net.to_dict() == study.to_dict()

    versions = _load(next(p for p in CONFIG_FILES if p.stem == 'ghostnet_versions'))
    configs = {v: versions.get_config(v) for v in ('v1', 'v2', 'v3')}
    assert [c.model.name for c in configs.values()] == [
        'ghostnet_cifar_050',
        'ghostnetv2_cifar_050',
        'ghostnetv3_cifar_050',
    ]
    for config in configs.values():
        config.model.name = 'same'
        assert config.to_dict() == configs['v1'].to_dict()
    assert configs['v1'].time_budget_minutes == 60.0
    with pytest.raises(ConfigError, match='v1, v2, v3'):
        versions.get_config('v4')


def test_study_net_done_properly_changes_only_what_it_names():
    """The done-properly run is the reproduction with the study's missing pieces: the
    network, batch, epochs and validation split stay; the diff is exactly the named fixes."""
    net = _load(next(p for p in CONFIG_FILES if p.stem == 'original_study_net')).get_config()
    done = _load(next(p for p in CONFIG_FILES if p.stem == 'study_net_done_properly')).get_config()

    a, b = flat_scalars(net.to_dict()), flat_scalars(done.to_dict())
    changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert changed == {
        'data.mean',
        'data.std',
        'data.augment.crop_padding',
        'data.augment.flip',
        'model.dropout_rate',
        'optimizer.name',
        'optimizer.learning_rate',
        'optimizer.schedule',
        'optimizer.warmup_epochs',
        'optimizer.weight_decay',
        'callbacks.early_stopping.enabled',
        'callbacks.reduce_lr_on_plateau.enabled',
    }
    assert (done.model.name, done.batch_size, done.num_epochs) == ('ghost_study_net', 32, 20)
    assert done.data.val_split == net.data.val_split == 'train[90%:]'
    assert done.data.mean is None and done.optimizer.weight_decay > 0
