"""The model zoo against the official numbers (computed from the official code, checked with
timm)."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ghostnet_jax
from ghostnet_jax.models import GhostBottleneck, GhostModule, SqueezeExcite, make_divisible
from ghostnet_jax.models.layer_table import layer_table

# (model, classes, input) -> (trainable params, MACs rounded as the official table gives them)
OFFICIAL = {
    ('ghostnet_050', 1000, 224): (2_587_292, 42.33),
    ('ghostnet_100', 1000, 224): (5_182_508, 141.15),
    ('ghostnet_130', 1000, 224): (7_358_820, 227.00),
    ('ghostnet_cifar_050', 10, 32): (1_318_838, 12.2),
    ('ghostnet_cifar_100', 10, 32): (3_913_790, 42.7),
    ('ghostnet_cifar_130', 10, 32): (6_089_926, 69.6),
    ('ghostnet_050', 10, 32): (1_319_102, None),
    ('ghostnet_100', 10, 32): (3_914_318, None),
    ('ghostnet_130', 10, 32): (6_090_630, None),
}


@pytest.mark.parametrize('key', OFFICIAL, ids=lambda k: f'{k[0]}-{k[1]}-{k[2]}')
def test_params_and_macs_match_official(key):
    name, classes, size = key
    params, macs_m = OFFICIAL[key]
    table = layer_table(ghostnet_jax.create_model(name, num_classes=classes), size)
    assert table.trainable_params == params
    if macs_m is not None:
        digits = 2 if size == 224 else 1
        assert round(table.macs / 1e6, digits) == macs_m


def test_paper_table3_networks_counts():
    # Paper: VGG-16 15.0M/313M, Ghost-VGG-16 7.7M/158M, ResNet-56 0.85M/125M,
    # Ghost-ResNet-56 0.43M/63M (public ports 0.44M/68M). Ours, exactly:
    expected = {
        'vgg16': (14_987_722, 313_463_808),
        'ghost_vgg16': (7_652_074, 158_699_520),
        'resnet56': (853_018, 125_485_696),
        'ghost_resnet56': (438_154, 65_286_784),
    }
    for name, (params, macs) in expected.items():
        table = layer_table(ghostnet_jax.create_model(name), 32)
        assert (table.trainable_params, table.macs) == (params, macs), name
    # Ghost versions roughly halve both (s = 2), as the paper reports.
    assert 0.45 < 7_652_074 / 14_987_722 < 0.55 and 0.45 < 438_154 / 853_018 < 0.55


def test_make_divisible_official_rule():
    assert [make_divisible(v) for v in (16 * 0.5, 48 * 0.5, 72 * 0.5, 20 * 1.0, 3.0, 10.0)] == [
        8,
        24,
        36,
        20,
        4,
        12,
    ]
    assert make_divisible(0.25 * 48) == 12
    assert make_divisible(13.0, 8) == 16  # 13 rounds to 16 (nearest multiple)
    assert make_divisible(11.0, 8) == 16  # 8 < 0.9 * 11, so one divisor is added


def _abstract_variables(model, size):
    x = jnp.zeros((1, size, size, 3))
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def test_bn_buffers_se_widths_and_feature_maps_at_1x():
    model = ghostnet_jax.create_model('ghostnet_100')
    variables = _abstract_variables(model, 224)
    assert sum(x.size for x in jax.tree.leaves(variables['batch_stats'])) == 21_968

    se_widths = []
    for stage, blocks in sorted(variables['params'].items()):
        for block_name, block in sorted(blocks.items()) if isinstance(blocks, dict) else []:
            if block_name == 'se':
                se_widths.append((stage, block['conv_reduce']['kernel'].shape[-1]))
    order = sorted(se_widths, key=lambda s: tuple(int(i) for i in s[0].split('_')[1:]))
    assert [w for _, w in order] == [20, 32, 120, 168, 168, 240, 240]

    outputs = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == '__call__' and context.module.name in (
            'bn1',
            'blocks_2_0',
            'blocks_4_0',
            'blocks_6_4',
            'blocks_8_3',
            'blocks_9_0',
        ):
            if context.module.parent is model or context.module.parent.name is None:
                outputs[context.module.name] = out.shape[1:]
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 224, 224, 3))), variables)
    assert outputs == {
        'bn1': (112, 112, 16),
        'blocks_2_0': (56, 56, 24),
        'blocks_4_0': (28, 28, 40),
        'blocks_6_4': (14, 14, 112),
        'blocks_8_3': (7, 7, 160),
        'blocks_9_0': (7, 7, 960),
    }


def _random_variables(model, x, seed=0):
    """Variables of the right shapes without compiling `model.init` (its RNG graph is the
    slowest compile of all on CPU): normal weights scaled by fan-in, BN var 1."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x))

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if 'var' in name or 'scale' in name:
            return jnp.ones(leaf.shape, leaf.dtype)
        fan_in = max(1, int(np.prod(leaf.shape[:-1])))
        return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


# The networks no other test runs are compiled and run here (the paper's Table 3 nets);
# the GhostNet families are run elsewhere (ghostnet_100, ghostnet_cifar_100 and the V2/V3
# 1.0x against timm's logits in test_convert.py, ghostnet_cifar_tiny and the V2/V3 tiny
# nets by every training test), and the other widths of a family are the same code with
# other channel counts, so their output shape is checked by tracing alone. The ImageNet
# GhostNetV2/V3 that timm has are traced by test_models_v2_v3.py; of their CIFAR
# variants the 0.5x (configs/ghostnet_versions.py) is traced here.
COMPILED = ('vgg16', 'ghost_vgg16', 'resnet56', 'ghost_resnet56')
TRACED_ELSEWHERE = re.compile(r'ghostnetv[23]_(100|130|160|cifar_(100|130|160))|ghostnetv3_050')


@pytest.mark.parametrize(
    'name', [n for n in ghostnet_jax.list_models() if not TRACED_ELSEWHERE.fullmatch(n)]
)
def test_every_model_gives_the_right_output_shape(name):
    model = ghostnet_jax.create_model(name, num_classes=7)
    size = max(32, getattr(model, 'min_input_size', lambda: 32)())  # 33 for ImageNet v2/v3
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    if name not in COMPILED:
        out, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x))
        assert out.shape == (2, 7)
        return
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(_random_variables(model, x), x)
    assert logits.shape == (2, 7) and bool(jnp.all(jnp.isfinite(logits)))
    assert float(jnp.abs(logits[0] - logits[1]).max()) > 0  # depends on the input


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match='ghostnet_cifar_100'):
        ghostnet_jax.create_model('ghostnet_999')
    with pytest.raises(ValueError, match='no_such_field'):
        ghostnet_jax.create_model('ghostnet_100', no_such_field=1)


# The semantics below are the blocks' and the network's, the same at every width: the
# 3-bottleneck ghostnet_cifar_tiny compiles in a fraction of the time of the real widths.
@pytest.fixture(scope='module')
def tiny_cifar():
    model = ghostnet_jax.create_model('ghostnet_cifar_tiny', dropout_rate=0.5)
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    return model, x, _random_variables(model, x)


def _jitted(model):
    evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=['batch_stats']))
    train = jax.jit(
        lambda v, x, seed: model.apply(
            v, x, train=True, mutable=['batch_stats'], rngs={'dropout': jax.random.key(seed)}
        )
    )
    return evaluate, train


def test_batch_stats_change_only_in_training(tiny_cifar):
    model, x, variables = tiny_cifar
    evaluate, train = _jitted(model)
    _, eval_updates = evaluate(variables, x)
    assert jax.tree.all(
        jax.tree.map(jnp.array_equal, eval_updates['batch_stats'], variables['batch_stats'])
    )
    _, train_updates = train(variables, x, 2)
    stem_mean = train_updates['batch_stats']['bn1']['mean']
    assert not np.allclose(stem_mean, variables['batch_stats']['bn1']['mean'])
    # momentum 0.9 (PyTorch's 0.1): new = 0.9 * old + 0.1 * batch mean of the stem conv,
    # computed here independently with XLA's convolution.
    kernel = variables['params']['conv_stem']['kernel']
    stem = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), [(1, 1), (1, 1)], dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
    old = variables['batch_stats']['bn1']['mean']
    np.testing.assert_allclose(
        stem_mean, 0.9 * old + 0.1 * stem.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )


def test_dropout_only_in_training(tiny_cifar):
    model, x, variables = tiny_cifar
    evaluate, train = _jitted(model)
    np.testing.assert_array_equal(evaluate(variables, x)[0], evaluate(variables, x)[0])
    assert not np.allclose(train(variables, x, 0)[0], train(variables, x, 1)[0])  # new mask
    np.testing.assert_array_equal(train(variables, x, 0)[0], train(variables, x, 0)[0])
    # With rate 0 the same training pass is mask-independent: the masks were the difference.
    no_dropout = ghostnet_jax.create_model('ghostnet_cifar_tiny', dropout_rate=0.0)
    _, train0 = _jitted(no_dropout)
    np.testing.assert_allclose(train0(variables, x, 0)[0], train0(variables, x, 1)[0])
    with pytest.raises(Exception, match='dropout'):
        jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(variables, x)


def test_bfloat16_compute_keeps_float32_params_and_stats():
    model = ghostnet_jax.create_model('ghostnet_cifar_tiny', dtype=jnp.bfloat16)
    x = jnp.ones((2, 16, 16, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype('float32')}
    variables = _random_variables(model, x)
    logits, updates = jax.jit(
        lambda v, x: model.apply(
            v, x, train=True, mutable=['batch_stats'], rngs={'dropout': jax.random.key(0)}
        )
    )(variables, x)
    assert logits.dtype == jnp.bfloat16
    assert {a.dtype for a in jax.tree.leaves(updates)} == {jnp.dtype('float32')}


def _init_apply(module, x):
    """(variables, output) of `module` on `x`, both compiled: run op by op, each of init's
    primitives would compile on its own (seconds for one bottleneck on CPU)."""
    variables = jax.jit(module.init)(jax.random.key(1), x)
    return variables, jax.jit(module.apply)(variables, x)


def test_blocks_standalone_semantics():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 6))
    v, out = _init_apply(GhostModule(features=7, ratio=3), x)
    assert out.shape == (2, 8, 8, 7)
    # ceil(7 / 3) = 3 primary channels, 3 * 2 = 6 cheap channels, sliced to 7.
    assert v['params']['primary_conv']['kernel'].shape == (1, 1, 6, 3)
    assert v['params']['cheap_operation']['kernel'].shape == (3, 3, 1, 6)

    _, out = _init_apply(SqueezeExcite(), x)
    gate = out / x
    assert float(gate.min()) >= 0.0 and float(gate.max()) <= 1.0  # hard sigmoid range

    identity = GhostBottleneck(12, 6, stride=1)
    v = jax.eval_shape(identity.init, jax.random.key(1), x)
    assert 'shortcut_dw' not in v['params']
    down = GhostBottleneck(12, 10, dw_kernel=5, stride=2, se_ratio=0.25)
    v = jax.eval_shape(down.init, jax.random.key(1), x)
    assert jax.eval_shape(down.apply, v, x).shape == (2, 4, 4, 10)
    assert v['params']['conv_dw']['kernel'].shape == (5, 5, 1, 12)
    assert v['params']['shortcut_dw']['kernel'].shape == (5, 5, 1, 6)


@pytest.mark.parametrize(
    'name, groups',
    [
        # The stem, one group per row group of the official table (9) plus the final 1x1 conv
        # block, and the head.
        ('ghostnet_cifar_100', ['head', 'stem'] + [f'stage{i}' for i in range(10)]),
        # VGG-16: the convs between max-pools (2, 2, 3, 3, 3 of them), then the classifier.
        ('vgg16', ['head'] + [f'stage{i}' for i in range(5)]),
        ('resnet56', ['head', 'stem', 'stage0', 'stage1', 'stage2']),
    ],
)
def test_models_name_their_parameter_groups(name, groups):
    model = ghostnet_jax.create_model(name)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    tops = list(shapes['params'])
    assert sorted({model.parameter_group(top) for top in tops}) == sorted(groups)
    if name == 'vgg16':
        per_stage = [sum(model.parameter_group(t) == f'stage{i}' for t in tops) for i in range(5)]
        assert per_stage == [2, 2, 3, 3, 3]


def test_study_net_matches_the_study_description():
    table = layer_table(ghostnet_jax.create_model('ghost_study_net'), 32)
    rows = {r.path: r for r in table.rows}
    assert rows['stem'].params == 896 and rows['stem'].output_shape == (1, 32, 32, 32)
    assert rows['ghost_0/primary_conv'].input_shape[-1] == 32
    assert rows['ghost_0/cheap_operation'].output_shape[-1] == 64
    last = rows['ghost_3/cheap_operation']
    assert last.output_shape == (1, 32, 32, 512) and last.params == 5_120
    assert rows['fc'].output_shape == (1, 512) and rows['classifier'].output_shape == (1, 10)
    assert table.trainable_params == 453_322 and table.bn_buffers == 0
    concat = layer_table(ghostnet_jax.create_model('ghost_study_net_concat'), 32)
    assert concat.trainable_params == 361_002
    assert [r.params for r in concat.rows if r.path == 'ghost_3/cheap_operation'] == [2_560]
    # The BatchNorm variant: scale + bias (trainable) and mean + variance (buffers) for each
    # of the stem's 32 and the modules' 2 x (64 + 128 + 256 + 512) conv outputs.
    bn_model = ghostnet_jax.create_model('ghost_study_net_bn')
    bn = layer_table(bn_model, 32)
    assert bn.trainable_params == 453_322 + 2 * 1_952 and bn.bn_buffers == 2 * 1_952
    assert bn_model.parameter_group('stem_bn') == 'stem'
