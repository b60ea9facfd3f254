"""The models as Flax NNX modules (ghostnet_jax.models.nnx_interop): the Linen variable tree
as NNX state, and NNX training (nnx.Optimizer) step for step equal to Linen training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ghostnet_jax.models import create_model
from ghostnet_jax.models.ghostnet import TINY_STAGES
from ghostnet_jax.models.nnx_interop import linen_variables, to_nnx


def _shapes(tree):
    return jax.tree.map(lambda leaf: tuple(np.shape(leaf)), tree)


# One network of each kind (GhostNet v1/v2/v3, the study's net without BatchNorm); the
# wrapper knows nothing of the architecture, so these stand for every registered name.
@pytest.mark.parametrize(
    'name',
    ['ghostnet_cifar_tiny', 'ghostnetv2_cifar_tiny', 'ghostnetv3_cifar_tiny', 'ghost_study_net'],
)
def test_nnx_state_is_the_linen_variable_tree(name):
    model = create_model(name)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    module = to_nnx(model, variables)
    assert isinstance(module, nnx.Module)
    assert _shapes(nnx.to_pure_dict(nnx.state(module, nnx.Param))) == _shapes(variables['params'])
    stats = nnx.to_pure_dict(nnx.state(module, nnx.BatchStat))
    assert _shapes(stats) == _shapes(variables.get('batch_stats', {}))
    assert _shapes(linen_variables(module)) == _shapes(
        {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
    )


def _random_variables(model, x):
    """Variables of the right shapes without compiling `model.init`: N(0, 1/fan_in), BN
    scales and variances 1."""
    rng = np.random.default_rng(0)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))

    def fill(path, leaf):
        if 'var' in jax.tree_util.keystr(path) or 'scale' in jax.tree_util.keystr(path):
            return jnp.ones(leaf.shape, leaf.dtype)
        fan_in = max(1, int(np.prod(leaf.shape[:-1])))
        return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def test_nnx_optimizer_training_equals_linen_training():
    """Three SGD-momentum steps with BatchNorm in training mode, from the same weights: the
    NNX module (nnx.Optimizer, nnx.value_and_grad) and the Linen model (optax by hand) give
    the same logits and losses at every step, and end with the same variables."""
    # ghostnet_cifar_tiny cut to its stride-2 bottleneck (BN, squeeze-free Ghost modules,
    # a projection shortcut): the bridge is the same for every network, and compiling
    # two train steps of a smaller one is cheaper.
    model = create_model(
        'ghostnet_cifar_tiny', num_classes=3, conv_impl='native', stages=(TINY_STAGES[1],)
    )
    images = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    labels = jnp.array([0, 1, 2, 1])
    variables = _random_variables(model, images)
    tx = optax.sgd(0.05, momentum=0.9)

    def loss_of(logits):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    # Dropout (rate 0.2 here) draws from each side's own RNG, so both run without it:
    # deterministic=True through the model's own field would change the module; a rate of
    # 0 is the same network.
    model = model.clone(dropout_rate=0.0)
    module = to_nnx(model, variables)
    optimizer = nnx.Optimizer(module, tx, wrt=nnx.Param)

    @nnx.jit
    def nnx_step(module, optimizer):
        def loss_fn(module):
            logits = module(images, train=True, mutable=['batch_stats'])
            return loss_of(logits), logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(module)
        optimizer.update(module, grads)
        return loss, logits

    @jax.jit
    def linen_step(params, stats, opt_state):
        def loss_fn(params):
            logits, updates = model.apply(
                {'params': params, 'batch_stats': stats},
                images,
                train=True,
                mutable=['batch_stats'],
            )
            return loss_of(logits), (logits, updates['batch_stats'])

        (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, loss, logits

    params, stats = variables['params'], variables['batch_stats']
    opt_state = tx.init(params)
    logits = []
    for step in range(3):
        params, stats, opt_state, linen_loss, linen_logits = linen_step(params, stats, opt_state)
        nnx_loss, nnx_logits = nnx_step(module, optimizer)
        np.testing.assert_allclose(
            nnx_logits, linen_logits, rtol=1e-5, atol=1e-5, err_msg=f'step {step}'
        )
        np.testing.assert_allclose(nnx_loss, linen_loss, rtol=1e-5, err_msg=f'step {step}')
        logits.append(np.asarray(linen_logits))
    # The steps changed the weights, so there was something to compare.
    assert np.abs(logits[-1] - logits[0]).max() > 1e-3
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
        linen_variables(module),
        {'params': params, 'batch_stats': stats},
    )
