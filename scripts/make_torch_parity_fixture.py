"""Writes tests/fixtures/torch_parity.{json,npz}: timm GhostNet/V2/V3 logits for seeded weights.

Run once where torch + timm are installed:
    python scripts/make_torch_parity_fixture.py

The fixture lets tests/test_convert.py check logit parity with timm without torch: it stores
each model's state_dict key names and shapes, a seed, an input batch and timm's eval-mode
logits. Both sides rebuild identical weights with `synthetic_state_dict(shapes, seed)` below
(numpy only), so the weights themselves need not be committed. The test imports this file
for that function, so module level must stay free of torch imports.

Models:
  ghostnet_100        timm.create_model('ghostnet_100'), 1000 classes, 56x56 input (all four
                      stride-2 depthwise kernels see both even and odd sizes: 56-28-14-7-4-2).
  ghostnet_cifar_100  timm has no CIFAR variant: timm's GhostNet with conv_stem stride 1 and
                      blocks[1][0] replaced by a stride-1 bottleneck, 10 classes, 32x32 input.
  ghostnetv2_100      timm.create_model('ghostnetv2_100'), 1000 classes, 56x56: DFC attention
                      on 14x14, 7x7 (pooled to 3x3, upsampled back to 7x7: the odd case of
                      nearest-neighbour resizing), 4x4 and 2x2 maps.
  ghostnetv3_100      timm.create_model('ghostnetv3_100') in training form (its branches),
                      1000 classes, 56x56; the tests also fold it and compare the folded
                      network with these logits.
  mobilenetv3_large_100, mobilenetv3_small_100
                      timm's MobileNetV3-Large/-Small 1.0, 1000 classes, 56x56: the
                      reference of the inference benchmark.

`--models NAME...` rewrites only those models' entries and keeps the others as they are.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

if importlib.util.find_spec('ghostnet_jax') is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # Run from a checkout.
from ghostnet_jax.timm_import import import_timm  # noqa: E402

FIXTURE_DIR = Path(__file__).resolve().parent.parent / 'tests' / 'fixtures'
FIXTURE_JSON = 'torch_parity.json'
FIXTURE_NPZ = 'torch_parity.npz'
BATCH = 2
# name -> (timm construction, num_classes, input size, seed); timm's model is the name
# without '_cifar' (timm_name below).
MODELS = {
    'ghostnet_100': ('imagenet', 1000, 56, 100),
    'ghostnet_cifar_100': ('cifar', 10, 32, 10032),
    'ghostnetv2_100': ('imagenet', 1000, 56, 200),
    'ghostnetv3_100': ('imagenet', 1000, 56, 300),
    'mobilenetv3_large_100': ('imagenet', 1000, 56, 400),
    'mobilenetv3_small_100': ('imagenet', 1000, 56, 500),
}


# BatchNorm scales multiplied by this. MobileNetV3's hard-swish has slope ~0.5 near 0 and its
# SE gates ~0.5, so with GhostNet's scales the input's trace shrinks ~10x per block and the
# logits no longer depend on the image (measured: 6e-6 apart for two images); these gains keep
# them O(1) and input-dependent (a little more, and they grow ~10x per block instead).
BN_GAIN = {'mobilenetv3_large_100': 1.3, 'mobilenetv3_small_100': 1.5}


def timm_name(name: str) -> str:
    """The timm model a registry name corresponds to (CIFAR variants: with surgery)."""
    return name.replace('_cifar', '')


def synthetic_state_dict(
    shapes: dict[str, tuple[int, ...]] | list, seed: int, bn_gain: float = 1.0
) -> dict[str, np.ndarray]:
    """Deterministic PyTorch-layout weights whose eval-mode activations stay O(1).

    One draw per key, in sorted key order, from numpy's default_rng(seed), so the result does
    not depend on dict order. Conv/Linear weights are N(0, 1/fan_in) (variance-preserving
    before the ReLU halves it; BN then rescales), BN scales are in [0.5, 1.5] (a quarter of
    that in GhostNetV3's re-parameterizable branches, which are summed), running
    variances in [0.5, 2] (positive, and far from 0 so 1/sqrt(var) stays tame), biases and
    running means small. num_batches_tracked is a 0 scalar, as in a fresh PyTorch model.
    """
    shapes = dict(shapes)
    rng = np.random.default_rng(seed)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        name = key.rsplit('.', 1)[-1]
        if name == 'num_batches_tracked':
            out[key] = np.zeros(shape, np.int64)
        elif name == 'weight' and len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            out[key] = rng.standard_normal(shape, np.float32) * np.float32(fan_in**-0.5)
        elif name == 'weight':
            scale = rng.uniform(0.5, 1.5, shape).astype(np.float32)
            # A GhostNetV3 conv sums up to five branches (3 kxk, 1x1 scale, identity BN), so
            # full-size branch scales would grow activations ~2x per conv, 1e8 at the logits.
            scale = scale * np.float32(bn_gain)
            out[key] = scale * np.float32(0.25) if '_rpr_' in key else scale
        elif name == 'running_var':
            out[key] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif name in ('bias', 'running_mean'):
            out[key] = rng.standard_normal(shape, np.float32) * np.float32(0.1)
        else:
            raise ValueError(f'No synthetic rule for {key}.')
    return out


def make_input(seed: int, size: int, batch: int = BATCH) -> np.ndarray:
    """An NHWC float32 batch like normalized images, from a seed separate from the weights'."""
    return np.random.default_rng(seed + 1).standard_normal((batch, size, size, 3), np.float32)


# ----------------------------------------------------------------------------- timm side


def timm_ghostnet(kind: str, num_classes: int, name: str = 'ghostnet_100'):
    """timm's GhostNet/V2/V3 (or MobileNetV3) `name`, random init, eval mode; 'cifar' =
    CIFAR strides (see docstring)."""
    timm = import_timm()
    from timm.models.ghostnet import GhostBottleneck, GhostBottleneckV3

    # pretrained=False: never download anything.
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if name.startswith('mobilenetv3') and kind != 'imagenet':
        raise ValueError('Only the ImageNet MobileNetV3 is in the fixture.')
    if kind == 'cifar':
        if not name.endswith('_100'):
            raise ValueError('The CIFAR surgery below is written for 1.0x widths.')
        model.conv_stem.stride = (1, 1)
        # The first stride-2 bottleneck (16 -> 48 -> 24, kernel 3), at stride 1. It is block
        # 1, before the first with DFC attention (2), in every version.
        block = GhostBottleneckV3 if name.startswith('ghostnetv3') else GhostBottleneck
        model.blocks[1][0] = block(16, 48, 24, 3, 1)
    elif kind != 'imagenet':
        raise ValueError(kind)
    return model.eval()


def timm_logits(model, state_dict: dict[str, np.ndarray], images_nhwc: np.ndarray) -> np.ndarray:
    import torch

    model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
        return model.eval()(x).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out-dir', type=Path, default=FIXTURE_DIR)
    parser.add_argument('--models', nargs='+', choices=sorted(MODELS), default=sorted(MODELS))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    timm = import_timm()
    from ghostnet_jax.models.pytorch_weights import expected_torch_shapes

    meta: dict[str, Any] = {'torch': torch.__version__, 'timm': timm.__version__, 'models': {}}
    arrays = {}
    kept = [name for name in MODELS if name not in args.models]
    if kept:  # the other models' entries, as they are
        old = json.loads((args.out_dir / FIXTURE_JSON).read_text())
        meta.update(torch=old['torch'], timm=old['timm'])  # the kept models' versions
        meta['models'] = {name: old['models'][name] for name in kept}
        with np.load(args.out_dir / FIXTURE_NPZ) as npz:
            arrays = {k: npz[k] for k in npz.files if k.split('/')[0] in kept}
    for name, (kind, num_classes, size, seed) in MODELS.items():
        if name not in args.models:
            continue
        model = timm_ghostnet(kind, num_classes, timm_name(name))
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        # The fixture is only meaningful if our key set is timm's (minus BN step counters).
        ours = expected_torch_shapes(name, num_classes=num_classes)
        theirs = {k: s for k, s in shapes.items() if not k.endswith('.num_batches_tracked')}
        if ours != theirs:
            raise SystemExit(
                f'{name}: key/shape sets differ: only timm '
                f'{sorted(set(theirs.items()) - set(ours.items()))}, only ours '
                f'{sorted(set(ours.items()) - set(theirs.items()))}'
            )
        images = make_input(seed, size)
        bn_gain = BN_GAIN.get(name, 1.0)
        logits = timm_logits(model, synthetic_state_dict(shapes, seed, bn_gain), images)
        meta['models'][name] = {
            'timm': kind,
            'num_classes': num_classes,
            'input_size': size,
            'seed': seed,
            **({'bn_gain': bn_gain} if bn_gain != 1.0 else {}),
            **({'torch': torch.__version__, 'timm': timm.__version__} if kept else {}),
            'shapes': [[k, list(s)] for k, s in shapes.items()],
        }
        arrays[f'{name}/input'] = images
        arrays[f'{name}/logits'] = logits
        print(
            f'{name}: {len(shapes)} keys, logits std {logits.std():.3f}, '
            f'max |logit| {np.abs(logits).max():.3f}'
        )

    args.out_dir.mkdir(parents=True, exist_ok=True)
    with open(args.out_dir / FIXTURE_JSON, 'w') as f:
        # One key per line: readable diffs when timm's layout changes.
        f.write(
            '{\n' + f'"torch": {json.dumps(meta["torch"])},\n"timm": {json.dumps(meta["timm"])},\n'
            '"models": {\n'
        )
        for i, (name, m) in enumerate(meta['models'].items()):
            head = {k: v for k, v in m.items() if k != 'shapes'}
            f.write(f'{json.dumps(name)}: {json.dumps(head)[:-1]}, "shapes": [\n')
            f.write(',\n'.join(json.dumps(entry) for entry in m['shapes']))
            f.write(']}' + (',' if i < len(meta['models']) - 1 else '') + '\n')
        f.write('}}\n')
    json.loads((args.out_dir / FIXTURE_JSON).read_text())  # The hand-written JSON must parse.
    np.savez_compressed(args.out_dir / FIXTURE_NPZ, **arrays)
    print(f'Wrote {args.out_dir / FIXTURE_JSON} and {args.out_dir / FIXTURE_NPZ}')


if __name__ == '__main__':
    main()
