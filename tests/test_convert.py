"""PyTorch weight import: key mapping, errors, safe loading, the CLI, and logit parity with timm.

Parity runs without torch against tests/fixtures/torch_parity.{json,npz}, written by
scripts/make_torch_parity_fixture.py; the weights are regenerated here from the stored seed
with that script's `synthetic_state_dict`. Tests marked by `_needs_torch`/`_needs_timm` run
live against PyTorch where it is installed and skip cleanly where it is not.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import traverse_util

from ghostnet_jax import convert, create_model
from ghostnet_jax.cli import errors
from ghostnet_jax.models import reparameterize
from ghostnet_jax.models.pytorch_weights import (
    StateDictMismatchError,
    UnsafeCheckpointError,
    expected_torch_shapes,
    from_torch_state_dict,
    load_state_dict,
)
from ghostnet_jax.timm_import import import_timm
from ghostnet_jax.training.pretrained import load_converted

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / 'tests' / 'fixtures'
ATOL = 1e-4


def _load_fixture_script():
    # The script is the single source of the synthetic weights; import it by path (scripts/
    # is not a package). Its module level imports numpy only.
    spec = importlib.util.spec_from_file_location(
        'make_torch_parity_fixture', REPO / 'scripts' / 'make_torch_parity_fixture.py'
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixture_script = _load_fixture_script()
synthetic_state_dict = fixture_script.synthetic_state_dict


@functools.cache
def _fixture():
    meta = json.loads((FIXTURES / fixture_script.FIXTURE_JSON).read_text())
    with np.load(FIXTURES / fixture_script.FIXTURE_NPZ) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return meta, arrays


@functools.cache
def _fixture_variables(name: str):
    meta = _fixture()[0]['models'][name]
    shapes = {k: tuple(s) for k, s in meta['shapes']}
    weights = synthetic_state_dict(shapes, meta['seed'], meta.get('bn_gain', 1.0))
    return from_torch_state_dict(weights, name)


@functools.cache
def _apply_fn(name: str, conv_impl: str = 'native', **overrides):
    model = create_model(name, conv_impl=conv_impl, **overrides)
    return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


@functools.cache
def _small_state_dict(name: str = 'ghostnet_cifar_050', num_classes: int = 5, seed: int = 0):
    return synthetic_state_dict(expected_torch_shapes(name, num_classes=num_classes), seed)


def _small(name: str = 'ghostnet_cifar_050', **kw):
    return dict(_small_state_dict(name, **kw))  # a fresh copy the test may edit


def _flat(tree):
    return traverse_util.flatten_dict(jax.tree.map(np.asarray, tree))


def _assert_trees_equal(a, b):
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for key in fa:
        np.testing.assert_array_equal(fa[key], fb[key], err_msg=str(key))


def _needs_torch():
    return pytest.importorskip('torch')


def _needs_timm():
    _needs_torch()
    # Not importorskip('timm'): importing timm may fail on torchvision, which import_timm handles.
    if importlib.util.find_spec('timm') is None:
        pytest.skip('timm is not installed')
    return import_timm()


# ----------------------------------------------------------------------------- parity


# The models the stored fixture holds (MobileNetV3 joins when the fixture script has been
# rerun with --models mobilenetv3_large_100 mobilenetv3_small_100 where torch is installed).
FIXTURE_MODELS = sorted(json.loads((FIXTURES / fixture_script.FIXTURE_JSON).read_text())['models'])


@pytest.mark.parametrize('name', FIXTURE_MODELS)
def test_fixture_keys_match_our_model(name):
    # If the model or the mapping drifts from timm's layout, say which keys, before parity fails.
    meta = _fixture()[0]['models'][name]
    theirs = {k: tuple(s) for k, s in meta['shapes'] if not k.endswith('.num_batches_tracked')}
    ours = expected_torch_shapes(name, num_classes=meta['num_classes'])
    assert ours == theirs


# v1 in both conv formulations; v2 and v3 (bigger, slower to compile) in the native one:
# tests/test_conv_formulations.py shows 'shifted' computes the same for each of their convs.
PARITY_CASES = [
    (name, impl)
    for name in FIXTURE_MODELS
    for impl in (('native', 'shifted') if name.startswith('ghostnet_') else ('native',))
]


@functools.cache
def _our_fixture_logits(name: str, conv_impl: str = 'native') -> np.ndarray:
    images = _fixture()[1][f'{name}/input']
    return np.asarray(_apply_fn(name, conv_impl)(_fixture_variables(name), images))


def _assert_matches_timm(name: str, what: str, logits: np.ndarray) -> None:
    expected = _fixture()[1][f'{name}/logits']
    assert logits.dtype == np.float32 and logits.shape == expected.shape
    diff = np.abs(logits - expected).max()
    relative = diff / np.abs(expected).max()
    print(f'{name} {what}: max |logit - timm| = {diff:.3g}, relative {relative:.3g}')
    # The logits must depend on the input, or agreement would prove little.
    assert np.abs(expected[0] - expected[1]).mean() > 100 * ATOL
    np.testing.assert_allclose(logits, expected, rtol=0, atol=ATOL)
    assert relative < 1e-4


@pytest.mark.parametrize('name, conv_impl', PARITY_CASES)
def test_logits_match_timm_fixture(name, conv_impl):
    meta, arrays = _fixture()
    assert arrays[f'{name}/input'].shape[1] == meta['models'][name]['input_size']
    _assert_matches_timm(name, conv_impl, _our_fixture_logits(name, conv_impl))


def test_folded_ghostnetv3_gives_timms_and_the_unfolded_logits():
    """reparameterize on the fixture's random weights and random BN statistics (float32):
    timm's folded parameter count, and timm's logits, which are also ours unfolded.
    (That `load` folds, and predict/export use the result: tests/test_export.py.)"""
    name = 'ghostnetv3_100'
    model, variables = reparameterize(
        create_model(name, conv_impl='native'), _fixture_variables(name)
    )
    assert model.reparameterized
    flat = _flat(variables['params'])
    assert not [path for path in flat if any('_rpr_' in part for part in path)]
    assert sum(v.size for v in flat.values()) == 6_147_588
    images = _fixture()[1][f'{name}/input']
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))
    _assert_matches_timm(name, 'folded', logits)
    unfolded = _our_fixture_logits(name)
    print(f'folded vs unfolded: max difference {np.abs(logits - unfolded).max():.3g}')
    np.testing.assert_allclose(logits, unfolded, rtol=0, atol=1e-5)


def test_live_timm_parity_odd_sizes(tmp_path):
    """ghostnet_050 (width rounding) on 40x40 (odd sizes 5 -> 3 at stride 2), via a .pth file."""
    _needs_timm()
    import torch

    model = fixture_script.timm_ghostnet('imagenet', 7, 'ghostnet_050')
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state_dict = synthetic_state_dict(shapes, seed=50)
    images = fixture_script.make_input(50, 40)
    expected = fixture_script.timm_logits(model, state_dict, images)

    path = tmp_path / 'ghostnet_050.pth'
    torch.save({'state_dict': model.state_dict(), 'epoch': 3}, path)
    variables = from_torch_state_dict(load_state_dict(path), 'ghostnet_050')
    logits = np.asarray(_apply_fn('ghostnet_050', 'native', num_classes=7)(variables, images))
    print(f'ghostnet_050 live: max |logit - timm| = {np.abs(logits - expected).max():.3g}')
    np.testing.assert_allclose(logits, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    'name', ['ghostnet_cifar_100', 'ghostnetv2_cifar_100', 'ghostnetv3_cifar_100']
)
def test_live_timm_cifar_variant_has_our_keys(name):
    _needs_timm()
    model = fixture_script.timm_ghostnet('cifar', 10, fixture_script.timm_name(name))
    theirs = {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.endswith('.num_batches_tracked')
    }
    assert not [k for k in theirs if k.startswith(('blocks.1.0.conv_dw', 'blocks.1.0.dw_rpr'))]
    assert expected_torch_shapes(name) == theirs


def test_live_timm_folded_ghostnetv3_converts_to_our_folded_form():
    """timm's own re-parameterization (deploy) of ghostnetv3_050 on 40x40 (odd sizes),
    read into our folded form."""
    _needs_timm()
    import torch
    from timm.utils.model import reparameterize_model

    model = fixture_script.timm_ghostnet('imagenet', 7, 'ghostnetv3_050')
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in synthetic_state_dict(shapes, seed=51).items()}
    )
    deploy = reparameterize_model(model.eval())
    state_dict = {k: v.numpy() for k, v in deploy.state_dict().items()}
    images = fixture_script.make_input(51, 40)
    expected = fixture_script.timm_logits(deploy, state_dict, images)
    with pytest.raises(StateDictMismatchError, match='reparameterized=True'):
        from_torch_state_dict(state_dict, 'ghostnetv3_050')
    variables = from_torch_state_dict(state_dict, 'ghostnetv3_050', reparameterized=True)
    apply = _apply_fn('ghostnetv3_050', 'native', num_classes=7, reparameterized=True)
    logits = np.asarray(apply(variables, images))
    print(f'ghostnetv3_050 folded live: max |logit - timm| = {np.abs(logits - expected).max():.3g}')
    np.testing.assert_allclose(logits, expected, rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------- mapping errors


def test_round_trip_layouts():
    sd = _small()
    variables = from_torch_state_dict(sd, 'ghostnet_cifar_050')
    params, stats = variables['params'], variables['batch_stats']
    np.testing.assert_array_equal(
        params['conv_stem']['kernel'], sd['conv_stem.weight'].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(params['classifier']['kernel'], sd['classifier.weight'].T)
    bn = 'blocks.3.0.ghost2.cheap_operation.1.'
    flax_bn = ('blocks_3_0', 'ghost2', 'cheap_bn')
    np.testing.assert_array_equal(_flat(params)[flax_bn + ('scale',)], sd[bn + 'weight'])
    np.testing.assert_array_equal(_flat(params)[flax_bn + ('bias',)], sd[bn + 'bias'])
    np.testing.assert_array_equal(_flat(stats)[flax_bn + ('mean',)], sd[bn + 'running_mean'])
    np.testing.assert_array_equal(_flat(stats)[flax_bn + ('var',)], sd[bn + 'running_var'])
    np.testing.assert_array_equal(
        _flat(params)[('blocks_1_0', 'shortcut_pw', 'kernel')],
        sd['blocks.1.0.shortcut.2.weight'].transpose(2, 3, 1, 0),
    )
    assert params['classifier']['kernel'].shape[1] == 5  # num_classes inferred


def test_missing_keys_are_all_listed():
    sd = _small()
    gone = ['bn1.running_var', 'blocks.1.0.shortcut.3.weight', 'conv_head.bias']
    for key in gone:
        del sd[key]
    with pytest.raises(StateDictMismatchError) as info:
        from_torch_state_dict(sd, 'ghostnet_cifar_050')
    assert info.value.missing == sorted(gone)
    assert not info.value.unexpected and not info.value.wrong_shapes
    assert all(key in str(info.value) for key in gone)


def test_extra_keys_are_all_listed():
    sd = _small()
    extra = {
        'blocks.1.0.conv_dw.weight': np.zeros((24, 1, 3, 3), np.float32),  # ImageNet-only
        'head.fc.weight': np.zeros((5, 1280), np.float32),
    }
    sd.update(extra)
    with pytest.raises(StateDictMismatchError) as info:
        from_torch_state_dict(sd, 'ghostnet_cifar_050')
    assert info.value.unexpected == sorted(extra)
    assert not info.value.missing
    assert all(key in str(info.value) for key in extra)


def test_wrong_shapes_are_all_listed():
    sd = _small()
    # A kernel left in Flax layout, and a 1.0x-width BN in a 0.5x model.
    sd['conv_stem.weight'] = sd['conv_stem.weight'].transpose(2, 3, 1, 0)
    sd['bn1.bias'] = np.zeros(16, np.float32)
    with pytest.raises(StateDictMismatchError) as info:
        from_torch_state_dict(sd, 'ghostnet_cifar_050')
    assert [w.split(':')[0] for w in info.value.wrong_shapes] == ['bn1.bias', 'conv_stem.weight']
    assert 'checkpoint (3, 3, 3, 8), model expects (8, 3, 3, 3)' in str(info.value)


def test_explicit_num_classes_must_match_classifier():
    with pytest.raises(StateDictMismatchError, match=r'classifier\.weight: checkpoint \(5, 1280\)'):
        from_torch_state_dict(_small(), 'ghostnet_cifar_050', num_classes=10)


def test_num_batches_tracked_is_ignored():
    sd = _small()
    bn_keys = [k[: -len('running_mean')] for k in sd if k.endswith('running_mean')]
    for prefix in bn_keys:
        sd[prefix + 'num_batches_tracked'] = np.array(1234, np.int64)
    _assert_trees_equal(
        from_torch_state_dict(sd, 'ghostnet_cifar_050'),
        from_torch_state_dict(_small(), 'ghostnet_cifar_050'),
    )


def test_official_bn_alias_and_module_prefix_are_accepted():
    sd = _small()
    official = {}
    for key, value in sd.items():
        key = key.replace('blocks.9.0.bn1.', 'blocks.9.0.bn.')
        official['module.' + key] = value  # as saved from nn.DataParallel
    assert 'module.blocks.9.0.bn.running_var' in official
    _assert_trees_equal(
        from_torch_state_dict(official, 'ghostnet_cifar_050'),
        from_torch_state_dict(sd, 'ghostnet_cifar_050'),
    )


def test_both_bn_spellings_at_once_is_an_error():
    sd = _small()
    sd['blocks.9.0.bn.weight'] = sd['blocks.9.0.bn1.weight']
    with pytest.raises(StateDictMismatchError, match=r'blocks\.9\.0\.bn\.weight \(duplicates'):
        from_torch_state_dict(sd, 'ghostnet_cifar_050')


def test_official_v3_branch_names_and_thop_counters_are_accepted():
    # The official GhostNetV3 code names each branch's norm `bn` (timm: `bn1`), and its
    # released checkpoints carry the `thop` profiler's total_ops/total_params counters.
    sd = _small('ghostnetv3_cifar_tiny')
    official = {k.replace('.bn1.', '.bn.') if '_rpr_' in k else k: v for k, v in sd.items()}
    assert 'blocks.1.0.dw_rpr_conv.0.bn.running_var' in official
    assert 'blocks.0.0.ghost1.cheap_rpr_scale.bn.weight' in official
    for key in (
        'total_ops',
        'total_params',
        'blocks.0.0.ghost1.total_ops',
        'conv_stem.total_params',
    ):
        official[key] = np.zeros((1,), np.float64)
    _assert_trees_equal(
        from_torch_state_dict(official, 'ghostnetv3_cifar_tiny'),
        from_torch_state_dict(sd, 'ghostnetv3_cifar_tiny'),
    )


def test_v2_v3_mismatches_list_every_key():
    # A v2 state_dict for the v3 of the same size: every branch missing, every plain conv-BN
    # unexpected, all listed; a v3 folded (deploy) state_dict gets a hint.
    v2 = _small('ghostnetv2_cifar_tiny')
    with pytest.raises(StateDictMismatchError) as info:
        from_torch_state_dict(v2, 'ghostnetv3_cifar_tiny')
    v3 = _small('ghostnetv3_cifar_tiny')
    assert info.value.missing == sorted(set(v3) - set(v2))
    assert info.value.unexpected == sorted(set(v2) - set(v3))
    assert (
        'blocks.2.0.ghost1.short_conv.4.weight' in v2
        and 'blocks.2.0.ghost1.short_conv.4.weight' in v3
    )
    assert 'reparameterized' not in str(info.value)
    folded = synthetic_state_dict(
        expected_torch_shapes('ghostnetv3_cifar_tiny', num_classes=5, reparameterized=True), 0
    )
    assert 'blocks.1.0.conv_dw.bias' in folded
    with pytest.raises(StateDictMismatchError, match='reparameterized=True'):
        from_torch_state_dict(folded, 'ghostnetv3_cifar_tiny')
    from_torch_state_dict(folded, 'ghostnetv3_cifar_tiny', reparameterized=True)


def test_convert_offers_every_registered_ghostnet():
    from ghostnet_jax.models import list_models

    assert set(convert.GHOSTNETS) == {
        n for n in list_models() if n.startswith('ghostnet') and not n.endswith('_tiny')
    }


def test_non_ghostnet_model_is_rejected():
    with pytest.raises(ValueError, match='GhostNet family and MobileNetV3 only'):
        from_torch_state_dict(_small(), 'resnet56')


# ----------------------------------------------------------------------------- reading files


class _Payload:
    """A pickled object whose unpickling would run code: `_mark_executed` via __reduce__."""

    def __reduce__(self):
        return (_mark_executed, ())


_EXECUTED = []


def _mark_executed():
    _EXECUTED.append(True)
    return None


def test_pickle_needing_full_unpickling_is_refused(tmp_path):
    torch = _needs_torch()
    path = tmp_path / 'trainer_state.pth'
    torch.save({'state_dict': {'conv_stem.weight': torch.zeros(1)}, 'hook': _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match='arbitrary code') as info:
        load_state_dict(path)
    assert '_mark_executed' in str(info.value) and 'state_dict()' in str(info.value)
    assert not _EXECUTED


def test_torch_file_wrappers_are_unwrapped(tmp_path):
    torch = _needs_torch()
    sd = _small()
    tensors = {k: torch.from_numpy(v) for k, v in sd.items()}
    for wrapper in ('state_dict', 'model'):
        path = tmp_path / f'{wrapper}.pt'
        torch.save({wrapper: tensors, 'epoch': 7}, path)
        loaded = load_state_dict(path)
        assert loaded.keys() == sd.keys()
        np.testing.assert_array_equal(loaded['classifier.weight'], sd['classifier.weight'])


def test_missing_torch_gives_install_hint(tmp_path, monkeypatch):
    path = tmp_path / 'weights.pth'
    path.write_bytes(b'not read')
    monkeypatch.setitem(sys.modules, 'torch', None)  # makes `import torch` fail
    with pytest.raises(ImportError, match=r"pip install 'ghostnet_jax\[torch\]'"):
        load_state_dict(path)


def test_missing_safetensors_gives_install_hint(tmp_path, monkeypatch):
    path = tmp_path / 'weights.safetensors'
    path.write_bytes(b'not read')
    monkeypatch.setitem(sys.modules, 'safetensors.numpy', None)
    with pytest.raises(ImportError, match=r"pip install 'ghostnet_jax\[torch\]'"):
        load_state_dict(path)


def test_unknown_suffix_is_rejected(tmp_path):
    path = tmp_path / 'weights.h5'
    path.write_bytes(b'')
    with pytest.raises(ValueError, match='Unknown checkpoint type'):
        load_state_dict(path)


# ----------------------------------------------------------------------------- CLI and Orbax


@pytest.fixture
def safetensors_file(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / 'ghostnet_050.safetensors'
    save_file(_small_state_dict('ghostnet_050', 5, 1), str(path))
    return path


def test_cli_safetensors_to_orbax_round_trip(safetensors_file, tmp_path, capsys):
    out = tmp_path / 'converted'
    assert (
        convert.main(
            ['--checkpoint', str(safetensors_file), '--model', 'ghostnet_050', '--out', str(out)]
        )
        == 0
    )
    assert 'ghostnet_050' in capsys.readouterr().out

    info = json.loads((out / 'convert.json').read_text())
    assert info['model'] == 'ghostnet_050' and info['num_classes'] == 5
    assert info['source_sha256'] == hashlib.sha256(safetensors_file.read_bytes()).hexdigest()

    restored = load_converted(out)
    direct = from_torch_state_dict(_small_state_dict('ghostnet_050', 5, 1), 'ghostnet_050')
    _assert_trees_equal(restored, direct)
    apply = _apply_fn('ghostnet_050', 'native', num_classes=5)
    images = fixture_script.make_input(0, 32)
    np.testing.assert_array_equal(
        np.asarray(apply(restored, images)), np.asarray(apply(direct, images))
    )

    # A second conversion into the same directory is refused and changes nothing.
    before = {p: p.read_bytes() for p in out.rglob('*') if p.is_file()}
    assert (
        convert.main(
            ['--checkpoint', str(safetensors_file), '--model', 'ghostnet_050', '--out', str(out)]
        )
        == errors.STORAGE
    )
    assert 'refusing' in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob('*') if p.is_file()} == before


def test_cli_refuses_non_empty_directory(safetensors_file, tmp_path, capsys):
    out = tmp_path / 'precious'
    out.mkdir()
    (out / 'keep.txt').write_text('mine')
    assert (
        convert.main(
            ['--checkpoint', str(safetensors_file), '--model', 'ghostnet_050', '--out', str(out)]
        )
        == errors.STORAGE
    )
    assert 'refusing' in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ['keep.txt']
    assert (out / 'keep.txt').read_text() == 'mine'


def test_cli_reports_mismatch_without_writing(safetensors_file, tmp_path, capsys):
    out = tmp_path / 'wrong_model'
    assert (
        convert.main(
            ['--checkpoint', str(safetensors_file), '--model', 'ghostnet_100', '--out', str(out)]
        )
        == errors.CHECKPOINT
    )
    err = capsys.readouterr().err
    assert 'Wrong shapes' in err and 'conv_stem.weight' in err
    assert not out.exists() or not any(out.iterdir())
