"""Converted timm/official ImageNet weights: load, predict (the CLI) and their metadata.

References: the timm logits stored in tests/fixtures (the weights are regenerated from the
fixture's seed, as tests/test_convert.py does), and ImageNet's published normalization
and timm's eval geometry written out here independently of the package.
"""

import json

import jax
import numpy as np
import pytest
from PIL import Image
from test_convert import _fixture, synthetic_state_dict

import ghostnet_jax
from ghostnet_jax import convert
from ghostnet_jax.models import create_model
from ghostnet_jax.models.pytorch_weights import from_torch_state_dict

MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet, [0, 1] units
STD = np.array([0.229, 0.224, 0.225], np.float32)


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """The fixture's ghostnet_100 weights through the convert CLI: (dir, state_dict)."""
    from safetensors.numpy import save_file

    meta = _fixture()[0]['models']['ghostnet_100']
    state_dict = synthetic_state_dict({k: tuple(s) for k, s in meta['shapes']}, meta['seed'])
    root = tmp_path_factory.mktemp('imagenet')
    save_file(state_dict, str(root / 'ghostnet_100.safetensors'))
    assert (
        convert.main(
            [
                '--checkpoint',
                str(root / 'ghostnet_100.safetensors'),
                '--model',
                'ghostnet_100',
                '--out',
                str(root / 'converted'),
            ]
        )
        == 0
    )
    return root / 'converted', state_dict


def test_convert_records_imagenet_spec_and_preprocessing(converted):
    info = json.loads((converted[0] / 'convert.json').read_text())
    spec, prep = info['model_spec'], info['preprocessing']
    assert spec['model_name'] == 'ghostnet_100' and spec['num_classes'] == 1000
    names = spec['class_names']
    assert len(names) == 1000 and len(set(names)) > 990
    assert names[0].startswith('tench') and names[1].startswith('goldfish')
    assert names[207].startswith('golden retriever') and names[999].startswith('toilet tissue')
    np.testing.assert_allclose(spec['mean'], 255 * MEAN, rtol=1e-6)
    np.testing.assert_allclose(spec['std'], 255 * STD, rtol=1e-6)
    assert spec['image_shape'] == [224, 224, 3]
    assert prep['resize_shorter'] == 256 and prep['interpolation'] == 'bicubic'
    assert info['metadata_guessed'] is False


def test_loaded_weights_give_timms_logits(converted):
    arrays = _fixture()[1]
    model = ghostnet_jax.load(converted[0], conv_impl='native')
    assert model.step is None and model.class_names[0].startswith('tench')
    images, expected = arrays['ghostnet_100/input'], arrays['ghostnet_100/logits']
    logits = jax.jit(lambda v, x: model.model.apply(v, x, train=False))(model.variables, images)
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=0, atol=1e-4)


def test_predict_cli_on_converted_weights_resizes_and_normalizes_like_timm(
    converted, tmp_path, capsys
):
    directory, state_dict = converted
    rng = np.random.default_rng(0)
    # 256 high, 320 wide: the shorter side is already 256, so timm's transform is exactly
    # the centre crop rows 16:240, columns 48:272, with no resampling to reproduce.
    pixels = np.clip(rng.normal(128, 60, (256, 320, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / 'photo.png')
    from ghostnet_jax import predict

    code = predict.main(
        [
            '--workdir',
            str(directory),
            '--format',
            'json',
            '--top-k',
            '5',
            str(tmp_path / 'photo.png'),
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    [record] = json.loads(out.out)['predictions']

    crop = pixels[16:240, 48:272].astype(np.float32) / 255.0
    x = ((crop - MEAN) / STD)[None]
    variables = from_torch_state_dict(state_dict, 'ghostnet_100')
    net = create_model('ghostnet_100', conv_impl='native')
    # Jitted: op by op, this 224x224 forward pass cost ~20 CPU-s of dispatch and compiles.
    logits = jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, x)
    probs = np.asarray(jax.nn.softmax(logits))[0]
    top = np.argsort(-probs)[:5]
    assert [t['class_index'] for t in record['top_k']] == top.tolist()
    np.testing.assert_allclose([t['probability'] for t in record['top_k']], probs[top], rtol=1e-4)
    assert record['top_k'][0]['class_name'] == ghostnet_jax.load(directory).class_names[top[0]]


def test_other_sizes_are_resized_then_cropped(converted):
    model = ghostnet_jax.load(converted[0])
    for size in ((600, 400), (200, 300), (224, 224)):  # PIL sizes are (width, height)
        image = Image.new('RGB', size, (10, 200, 30))
        out = model.prepare(image)
        assert out.shape == (224, 224, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[112, 112], [10, 200, 30])
    gray = model.prepare(Image.new('L', (300, 300), 77))
    assert gray.shape == (224, 224, 3) and (gray == 77).all()
