"""GhostNetV2 and V3 against timm and PyTorch: parameter counts, DFC attention's pooling
and upsampling rules, where DFC and V3's branches sit, and V3's branch folding."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ghostnet_jax
from ghostnet_jax.models import Conv, GhostModule
from ghostnet_jax.models.ghost_blocks import avg_pool_2x2, upsample_nearest
from ghostnet_jax.models.registry import ModelInputError
from ghostnet_jax.models.reparameterize import fold_branches


def _abstract_variables(model, size):
    x = jnp.zeros((1, size, size, 3))
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


# timm 1.0.31's counts at 1000 classes (its models' parameters; V3 folded by timm's
# reparameterize_model). Each trace also checks the logits' shape.
TIMM_COUNTS = {
    ('ghostnetv2_100', False): 6_156_908,
    ('ghostnetv2_130', False): 8_960_404,
    ('ghostnetv2_160', False): 12_392_698,
    ('ghostnetv3_050', False): 3_395_384,
    ('ghostnetv3_100', False): 8_129_028,
    ('ghostnetv3_130', False): 12_217_720,
    ('ghostnetv3_160', False): 17_275_700,
    ('ghostnetv3_050', True): 2_853_176,  # folded 1.0x: tests/test_convert.py (with logits)
}


@pytest.mark.parametrize('name, folded', TIMM_COUNTS, ids=lambda v: str(v))
def test_v2_v3_counts_match_timm(name, folded):
    model = ghostnet_jax.create_model(name, conv_impl='native', reparameterized=folded)
    x = jnp.zeros((1, model.min_input_size(), model.min_input_size(), 3))
    logits, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x))
    assert logits.shape == (1, 1000)
    assert sum(v.size for v in jax.tree.leaves(variables['params'])) == TIMM_COUNTS[name, folded]


# ----------------------------------------------------------------------------- GhostNetV2/V3


def test_upsample_nearest_is_pytorchs_rule():
    # F.interpolate(mode='nearest') reads input index floor(i * in / out) (PyTorch's
    # documented rule); jax.image.resize's half-pixel centres would read 0,0,1,1,2,2,2 for 3->7.
    for size_in, size_out in ((3, 7), (2, 4), (1, 2), (4, 9), (5, 5), (7, 15)):
        x = jnp.arange(size_in * 2, dtype=jnp.float32).reshape(1, size_in, 2, 1)
        rows = [i * size_in // size_out for i in range(size_out)]
        for train in (True, False):  # training's broadcast, inference's resize op
            y = upsample_nearest(x, size_out, 4, train=train)
            np.testing.assert_array_equal(y[0, :, :, 0], np.asarray(x)[0, rows][:, [0, 0, 1, 1], 0])
    assert [i * 3 // 7 for i in range(7)] == [0, 0, 0, 1, 1, 2, 2]


def test_avg_pool_2x2_floor_mode_in_training_and_inference():
    # PyTorch's avg_pool2d(2, 2) floors: a 5x7 map pools to 2x3, its last row and column
    # dropped; each output is the mean of its 2x2 window, computed here by hand.
    x = np.arange(2 * 5 * 7 * 3, dtype=np.float32).reshape(2, 5, 7, 3)
    expected = np.stack(
        [
            np.stack(
                [x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(axis=(1, 2)) for j in range(3)], 1
            )
            for i in range(2)
        ],
        1,
    )
    for train in (True, False):  # reshape + mean, nn.avg_pool
        np.testing.assert_allclose(avg_pool_2x2(jnp.asarray(x), train), expected, rtol=1e-6)


def _param_paths(name, **overrides):
    model = ghostnet_jax.create_model(name, **overrides)
    shapes = _abstract_variables(model, 32)
    return {'/'.join(k) for k in flax.traverse_util.flatten_dict(shapes['params'])}


def test_dfc_on_ghost1_from_the_third_block_and_v3_branches_where_shapes_allow():
    v2 = _param_paths('ghostnetv2_cifar_tiny')
    assert {p.split('/dfc/')[0] for p in v2 if '/dfc/' in p} == {'blocks_2_0/ghost1'}
    assert 'blocks_2_0/ghost1/dfc/conv_h/kernel' in v2 and 'blocks_2_0/ghost1/dfc/bn_v/scale' in v2

    v3 = _param_paths('ghostnetv3_cifar_tiny', num_branches=3)  # timm's count (the tiny has 1)
    assert {p.split('/dfc/')[0] for p in v3 if '/dfc/' in p} == {'blocks_2_0/ghost1'}
    modules = {
        p.rsplit('/', 2)[0] if '/conv/' in p or '/bn1/' in p else p.rsplit('/', 1)[0] for p in v3
    }
    ghosts = [f'blocks_{b}_0/ghost{g}' for b in range(3) for g in (1, 2)]
    for ghost in ghosts:
        # 3 branches each; a 1x1 primary conv has no 1x1 scale branch; the cheap op (as many
        # outputs as inputs, stride 1) has its identity BN; the primary never does here
        # (its input is never half its output width).
        assert {m for m in modules if m.startswith(ghost + '/')} >= {
            f'{ghost}/{kind}_rpr_conv_{i}' for kind in ('primary', 'cheap') for i in range(3)
        }
        assert f'{ghost}/cheap_rpr_scale' in modules and f'{ghost}/cheap_rpr_skip' in modules
        assert f'{ghost}/primary_rpr_scale' not in modules
        assert f'{ghost}/primary_rpr_skip' not in modules
    # Stride-2 blocks only (block 0 has stride 1): 3 depthwise branches and a 1x1 scale
    # branch, no identity (stride 2).
    dw = {m for m in modules if '/dw_rpr_' in m}
    assert dw == {
        f'blocks_{b}_0/dw_rpr_{k}' for b in (1, 2) for k in ('conv_0', 'conv_1', 'conv_2', 'scale')
    }


def test_imagenet_strides_v2_v3_refuse_too_small_images_with_the_fix():
    model = ghostnet_jax.create_model('ghostnetv2_100')
    assert model.min_input_size() == 33
    with pytest.raises(ModelInputError, match=r'at least 33x33.*ghostnetv2_cifar_100'):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert ghostnet_jax.create_model('ghostnetv3_cifar_100').min_input_size() <= 32
    with pytest.raises(ValueError, match='GhostNetV3 only'):
        ghostnet_jax.create_model('ghostnetv2_cifar_tiny', reparameterized=True).init(
            jax.random.key(0), jnp.zeros((1, 32, 32, 3))
        )


def _random_bn_variables(model, x, seed):
    """Random weights AND random BatchNorm statistics (scale, bias, mean, var), so that a
    folding mistake in any of them shows."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x))

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "'var'" in name:
            return jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), leaf.dtype)
        if "'scale'" in name:
            return jnp.asarray(rng.uniform(0.2, 0.6, leaf.shape), leaf.dtype)
        fan_in = max(1, int(np.prod(leaf.shape[:-1])))
        return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.mark.parametrize('kernel_size', [1, 3])
def test_folding_a_ghost_module_with_every_branch_kind(kernel_size):
    # 4 -> 8 channels: the primary conv maps 4 -> 4, so it has an identity-BN branch (the
    # dense identity kernel) besides the cheap op's (depthwise); kernel 3 adds the primary's
    # 1x1 scale branch. The folded module must compute the unfolded one's eval output.
    x = jax.random.normal(jax.random.key(3), (2, 7, 7, 4))
    conv = functools.partial(Conv, impl='native')
    module = GhostModule(8, kernel_size=kernel_size, branches=2, conv=conv)
    variables = _random_bn_variables(module, x, kernel_size)
    names = set(variables['params'])
    assert {'primary_rpr_skip', 'cheap_rpr_skip', 'cheap_rpr_scale'} <= names
    assert ('primary_rpr_scale' in names) == (kernel_size > 1)
    folded = fold_branches(variables)
    assert set(folded['params']) == {'primary_conv', 'cheap_operation'}
    assert folded['batch_stats'] == {}
    want = module.apply(variables, x)
    got = module.clone(reparameterized=True).apply(folded, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
