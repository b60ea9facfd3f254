import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from ghostnet_jax.training.checkpoints import (
    Checkpointer,
    CheckpointError,
    abstract_state,
    load_variables,
)


@struct.dataclass
class State:
    step: jax.Array
    params: dict
    batch_stats: dict
    opt_state: optax.OptState
    ema_params: dict | None = None


def _state(value: float = 1.0, ema: bool = False) -> State:
    params = {'conv': {'kernel': jnp.full((3, 3, 2, 4), value), 'bias': jnp.zeros(4)}}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    return State(
        step=jnp.asarray(int(value), jnp.int32),
        params=params,
        batch_stats={'bn': {'mean': jnp.full((4,), value), 'var': jnp.ones(4)}},
        opt_state=tx.init(params),
        ema_params=jax.tree.map(lambda x: x + 0.5, params) if ema else None,
    )


def _save(ck, step, acc=None, value=None):
    ck.save(
        step,
        _state(float(step) if value is None else value),
        {'epoch': step, 'seed': 0},
        metrics=None if acc is None else {'val_accuracy': acc, 'val_loss': 1.0 - acc},
    )


def test_round_trip_preserves_optax_types_and_host_state(tmp_path):
    state = _state(3.0, ema=True)
    state = state.replace(
        opt_state=jax.tree.map(lambda x: x + 1 if x.dtype == jnp.float32 else x, state.opt_state)
    )
    with Checkpointer(tmp_path) as ck:
        ck.save(
            7,
            state,
            {'epoch': 2, 'callbacks': {'es': {'wait': 1, 'best': None}}, 'loss': np.float32(0.5)},
        )
    with Checkpointer(tmp_path) as ck:
        target = jax.eval_shape(lambda: _state(0.0, ema=True))
        restored, host = ck.restore(target)
    assert host == {'epoch': 2, 'callbacks': {'es': {'wait': 1, 'best': None}}, 'loss': 0.5}
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    assert type(restored.opt_state[1][0]).__name__ == 'ScaleByAdamState'
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


def test_restore_onto_mesh_is_replicated(tmp_path):
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
    with Checkpointer(tmp_path) as ck:
        _save(ck, 1)
        restored, _ = ck.restore(_state(0.0), mesh=mesh)
    sharding = restored.params['conv']['kernel'].sharding
    assert (
        isinstance(sharding, jax.sharding.NamedSharding)
        and sharding.spec == jax.sharding.PartitionSpec()
    )
    assert abstract_state(_state(0.0), mesh).params['conv']['kernel'].sharding.is_fully_replicated


def test_keep_latest_k_and_best_across_resume(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=2) as ck:
        for step, acc in [(1, 0.3), (2, 0.9), (3, 0.5), (4, 0.6)]:
            _save(ck, step, acc)
        ck.wait_until_finished()
        assert ck.all_steps() == [2, 3, 4] and ck.best_step() == 2
    # Resume with a fresh manager: step 2 is still known as the best and kept.
    with Checkpointer(tmp_path, max_to_keep=2) as ck:
        assert ck.best_step() == 2
        _save(ck, 5, 0.7)
        _save(ck, 6, None)  # a save without metrics is only covered by latest-k
        _save(ck, 7, 0.95)
        ck.wait_until_finished()
        assert ck.all_steps() == [6, 7]  # 7 is both latest and best; 2 may now go
        _save(ck, 8, 0.1)
        _save(ck, 9, 0.2)
        ck.wait_until_finished()
        assert ck.all_steps() == [7, 8, 9] and ck.best_step() == 7
        best, host = ck.restore(jax.eval_shape(_state), which='best')
        assert host['epoch'] == 7 and float(best.params['conv']['kernel'][0, 0, 0, 0]) == 7.0
        _, host = ck.restore(jax.eval_shape(_state), which=8)
        assert host['epoch'] == 8
    assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['7', '8', '9']


def test_best_mode_min(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=1, best_metric='val_loss', best_mode='min') as ck:
        for step, acc in [(1, 0.5), (2, 0.9), (3, 0.1)]:
            _save(ck, step, acc)  # val_loss = 1 - acc -> best is step 2
        ck.wait_until_finished()
        assert ck.all_steps() == [2, 3] and ck.best_step() == 2


def test_half_written_checkpoint_is_ignored_with_warning(tmp_path, caplog):
    with Checkpointer(tmp_path) as ck:
        _save(ck, 1)
        _save(ck, 2)
    # What kill -9 during the save of step 3 leaves behind.
    tmp = tmp_path / 'checkpoints' / '3.orbax-checkpoint-tmp'
    shutil.copytree(tmp_path / 'checkpoints' / '2', tmp)
    os.remove(tmp / 'state' / 'manifest.ocdbt')
    caplog.set_level(logging.WARNING)
    with Checkpointer(tmp_path) as ck:
        assert ck.all_steps() == [1, 2]
        _, host = ck.restore(jax.eval_shape(_state))
        assert host['epoch'] == 2
        # orbax replaces the stale tmp dir when step 3 is saved again
        _save(ck, 3)
        ck.wait_until_finished()
        assert ck.all_steps() == [1, 2, 3]
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and 'half-written' in r.getMessage()
    ]
    assert warnings and str(tmp) in warnings[0] and 'step 2' in warnings[0]


@pytest.mark.parametrize('damage', ['manifest', 'host_dir', 'metadata'])
def test_damaged_checkpoint_gives_clear_error(tmp_path, damage):
    with Checkpointer(tmp_path) as ck:
        _save(ck, 1)
        _save(ck, 2)
    step2 = tmp_path / 'checkpoints' / '2'
    if damage == 'manifest':
        os.remove(step2 / 'state' / 'manifest.ocdbt')
    elif damage == 'host_dir':
        shutil.rmtree(step2 / 'host')
    else:
        os.remove(step2 / 'state' / '_METADATA')
    with Checkpointer(tmp_path) as ck:
        with pytest.raises(CheckpointError, match=r'checkpoints/2 is damaged.*--checkpoint 1'):
            ck.restore(jax.eval_shape(_state))
        _, host = ck.restore(jax.eval_shape(_state), which=1)
        assert host['epoch'] == 1


def test_missing_checkpoints_list_what_exists(tmp_path):
    (tmp_path / 'tensorboard').mkdir()
    with pytest.raises(CheckpointError, match=r'No checkpoint directory .*tensorboard/'):
        Checkpointer(tmp_path, read_only=True)
    with pytest.raises(CheckpointError, match=rf"{tmp_path} contains \['tensorboard/'\]"):
        Checkpointer(tmp_path / 'nope' / 'deeper', read_only=True)
    with Checkpointer(tmp_path) as ck:
        with pytest.raises(CheckpointError, match=r'No finished checkpoint .*contains nothing'):
            ck.restore(jax.eval_shape(_state))
        _save(ck, 4)
        with pytest.raises(CheckpointError, match=r'step 5 .*available steps: \[4\]'):
            ck.restore(jax.eval_shape(_state), which=5)
        with pytest.raises(CheckpointError, match='val_accuracy'):
            ck.restore(jax.eval_shape(_state), which='best')


def test_refuses_to_overwrite(tmp_path):
    with Checkpointer(tmp_path) as ck:
        _save(ck, 1, value=1.0)
        with pytest.raises(CheckpointError, match='Refusing to overwrite'):
            _save(ck, 1, value=9.0)
    with Checkpointer(tmp_path) as ck:
        with pytest.raises(CheckpointError, match='Refusing to overwrite'):
            _save(ck, 1, value=9.0)
        restored, _ = ck.restore(jax.eval_shape(_state))
    assert float(restored.batch_stats['bn']['mean'][0]) == 1.0


def test_should_save_cadence(tmp_path):
    with Checkpointer(tmp_path, every_epochs=3) as ck:
        assert [e for e in range(1, 11) if ck.should_save(e, num_epochs=10)] == [3, 6, 9, 10]


def test_load_variables_from_workdir_step_dir_and_converted(tmp_path):
    with Checkpointer(tmp_path / 'run') as ck:
        _save(ck, 1, value=1.0)
        _save(ck, 2, value=2.0)
    for path in [
        tmp_path / 'run',
        tmp_path / 'run' / 'checkpoints',
        tmp_path / 'run' / 'checkpoints' / '2',
    ]:
        v = load_variables(path)
        assert sorted(v) == ['batch_stats', 'params']
        assert isinstance(v['params']['conv']['kernel'], np.ndarray)
        np.testing.assert_array_equal(v['batch_stats']['bn']['mean'], np.full(4, 2.0))
    # A converter that writes only {'params', 'batch_stats'} in the same layout.
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(tmp_path / 'torch' / 'checkpoints') as m:
        m.save(
            0,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(
                    {'params': {'w': np.ones(3)}, 'batch_stats': {'m': np.zeros(2)}}
                )
            ),
        )
    v = load_variables(tmp_path / 'torch')
    np.testing.assert_array_equal(v['params']['w'], np.ones(3))
    with pytest.raises(CheckpointError, match='No checkpoint at .*contains'):
        load_variables(tmp_path / 'missing')


def test_marked_best_is_kept_and_is_the_best_step(tmp_path):
    """The loop marks a save as a new best by its own rule (e.g. early stopping's min_delta):
    that step is kept past the latest-k window and is what "best" restores, even when the
    plain ranking metric prefers another step."""
    from ghostnet_jax.training.checkpoints import BEST_MARK

    with Checkpointer(tmp_path, max_to_keep=2, keep_best=1) as ck:
        for step, acc, mark in ((1, 0.5, True), (2, 0.9, False), (3, 0.8, False), (4, 0.7, False)):
            metrics = {'val_accuracy': acc, **({BEST_MARK: 1.0} if mark else {})}
            ck.save(step, _state(float(step)), {'epoch': step}, metrics=metrics)
        ck.wait_until_finished()
        assert ck.best_step() == 1
        assert 1 in ck.all_steps() and 3 in ck.all_steps() and 4 in ck.all_steps()
    with Checkpointer(tmp_path, max_to_keep=2, keep_best=1) as ck:  # after a restart too
        assert ck.best_step() == 1


def test_damaged_latest_is_set_aside_and_the_previous_restored(tmp_path, caplog):
    with Checkpointer(tmp_path) as ck:
        _save(ck, 1)
        _save(ck, 2)
    for f in (tmp_path / 'checkpoints' / '2' / 'state').rglob('*'):
        if f.is_file() and f.stat().st_size > 100:
            f.write_bytes(b'\0' * 10)
    target = jax.eval_shape(lambda: _state(0.0))
    with caplog.at_level(logging.WARNING), Checkpointer(tmp_path) as ck:
        restored, host = ck.restore_latest_intact(target)
        assert int(restored.step) == 1 and host['epoch'] == 1
        assert ck.all_steps() == [1]
    aside = [p.name for p in (tmp_path / 'checkpoints').iterdir() if '.damaged-' in p.name]
    assert len(aside) == 1 and aside[0].startswith('2.damaged-')
    assert 'is damaged' in caplog.text
