import math

import pytest

from ghostnet_jax.training.model_spec import ModelSpec, ModelSpecError


def _spec(**kw):
    base = dict(
        model_name='ghostnet_cifar_tiny',
        num_classes=3,
        class_names=('a', 'b', 'c'),
        image_shape=(16, 16, 3),
        mean=(120.0, 110.5, 100.25),
        std=(60.0, 61.0, 62.0),
        model_overrides={'dropout_rate': 0.0},
    )
    return ModelSpec(**{**base, **kw})


def test_json_round_trip_and_build():
    spec = _spec(resize=16)
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec and again.differences(spec) == []
    model = spec.build_model()
    assert model.num_classes == 3 and model.dropout_rate == 0.0


@pytest.mark.parametrize(
    'bad, needle',
    [
        (dict(class_names=('a', 'b')), '2 class names for 3 classes'),
        (dict(mean=(1.0, 2.0)), 'mean must hold 3'),
        (dict(std=(1.0, 0.0, 1.0)), 'std must be positive'),
        (dict(mean=(1.0, math.nan, 1.0)), 'finite'),
    ],
)
def test_impossible_specs_are_refused(bad, needle):
    with pytest.raises(ModelSpecError, match=needle):
        _spec(**bad)


def test_missing_fields_are_named():
    d = _spec().to_json()
    del d['std'], d['class_names']
    with pytest.raises(ModelSpecError, match=r"\['class_names', 'std'\]"):
        ModelSpec.from_json(d)


def test_differences_name_fields_and_tolerate_float_noise():
    spec = _spec()
    assert spec.differences(_spec(mean=(120.0 + 1e-6, 110.5, 100.25))) == []
    diffs = spec.differences(_spec(mean=(121.0, 110.5, 100.25), class_names=('a', 'b', 'd')))
    assert [d.split(':')[0] for d in diffs] == ['class_names', 'mean']
