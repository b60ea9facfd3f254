"""Evaluate a training run's checkpoint on a split.

    python -m ghostnet_jax.evaluate --workdir runs/X [--checkpoint best|latest|STEP]
        [--split test|val|train|SPLIT_SPEC] [--source tfds:NAME|folder:PATH] [--batch-size N]

Rebuilds the model from the checkpoint's stored spec (architecture, classes, input
normalization), restores it, reads the split (of the run's data source or --source),
counts every example exactly once, prints the metrics and writes them to
WORKDIR/eval-<split>-<checkpoint>.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath

from ghostnet_jax.data import channel_stats, load_split
from ghostnet_jax import exit_codes
from ghostnet_jax.training.checkpoints import Checkpointer
from ghostnet_jax.training.experiment import build_eval_data, build_model
from ghostnet_jax.training.model_spec import SPEC_KEY, ModelSpec, spec_from_training
from ghostnet_jax.training.optim import build_optimizer
from ghostnet_jax.training.parallel import make_mesh
from ghostnet_jax.training.state import create_train_state, eval_variables
from ghostnet_jax.training.trainer import Evaluator


def load_run_config(workdir: epath.Path) -> ml_collections.ConfigDict:
    path = workdir / 'config.json'
    if not path.exists():
        raise FileNotFoundError(f'{path} not found: --workdir must be a folder written by '
                                'python -m ghostnet_jax.train.')
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def _spec_of(host: dict, config: ml_collections.ConfigDict, data_kwargs: dict) -> ModelSpec:
    """The checkpoint's own spec; checkpoints written before specs existed get one rebuilt
    from the training split (which must then still be there, unchanged)."""
    if SPEC_KEY in host:
        return ModelSpec.from_json(host[SPEC_KEY])
    logging.warning('This checkpoint predates stored model specs: recomputing the input '
                    'normalization from the training split %s.', config.data.train_split)
    train = load_split(config.data.source, config.data.train_split, **data_kwargs)
    mean, std = channel_stats(train)
    return spec_from_training(config, train.class_names, train.image_shape, mean, std)


def evaluate_checkpoint(workdir: str | epath.Path, checkpoint: str | int = 'best', split: str = 'test',
                        batch_size: int | None = None, source: str | None = None) -> dict:
    """Metrics of one checkpoint of a run on `split` ('test', 'val', 'train' or a spec) of
    the run's data source, or of `source` ('tfds:NAME' / 'folder:PATH') when given.

    The model, class names and input normalization come from the checkpoint itself, so
    the training data need not exist any more."""
    workdir = epath.Path(workdir)   # local folders and gs:// alike
    config = load_run_config(workdir)
    if batch_size:
        config.eval_batch_size = batch_size
    if source:
        spec_text = split
    else:
        spec_text = {'test': config.data.test_split, 'val': config.data.val_split,
                     'train': config.data.train_split}.get(split, split)
    if not spec_text:
        raise ValueError(f'This run has no {split} split configured; pass a split spec, '
                         "e.g. --split 'train[90%:]'.")
    data_kwargs = dict(data_dir=config.data.data_dir, cache_dir=config.data.cache_dir,
                       image_size=config.data.image_size,
                       skip_corrupt_images=config.data.get('skip_corrupt_images', False))
    mesh = make_mesh()
    with Checkpointer.from_config(workdir, config.checkpoint, read_only=True) as ckpt:
        step, host = ckpt.read_host(checkpoint)
        model_spec = _spec_of(host, config, data_kwargs)
        model = build_model(config, model_spec.num_classes)
        # Shapes only: the restore target needs no initialized (compiled) weights.
        images = jax.ShapeDtypeStruct((1, *model_spec.image_shape), jnp.float32)
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
        tx, _ = build_optimizer(config.optimizer, 1, config.num_epochs, variables['params'])
        template = jax.eval_shape(lambda v: create_train_state(v, tx, config.ema_decay), variables)
        state, _ = ckpt.restore(template, step, mesh=mesh)

    data_kwargs['image_size'] = model_spec.resize
    target = load_split(source or config.data.source, spec_text, **data_kwargs)
    if tuple(target.class_names) != model_spec.class_names:
        raise ValueError(
            f'{target.name} has classes {list(target.class_names)}, but the model was trained on '
            f'{list(model_spec.class_names)}; evaluate on data with the same classes.')
    if target.image_shape != model_spec.image_shape:
        raise ValueError(
            f'{target.name} holds {target.image_shape} images, the model was trained on '
            f'{model_spec.image_shape}; the run resized images to {model_spec.resize}.')
    summary = Evaluator(model, model_spec.num_classes, flip=config.get('eval_flip', False))(
        eval_variables(state),
        build_eval_data(target, mesh, config, model_spec.mean, model_spec.std))
    return {
        'workdir': str(workdir), 'checkpoint': checkpoint, 'step': int(state.step),
        'source': source or config.data.source, 'split': spec_text,
        'num_examples': summary['num_examples'], 'loss': summary['loss'],
        'accuracy': summary['accuracy'],
        'per_class_accuracy': dict(zip(model_spec.class_names,
                                       map(float, summary['per_class_accuracy']))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m ghostnet_jax.evaluate', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--workdir', required=True, type=epath.Path)
    parser.add_argument('--checkpoint', default='best', help='best, latest or a step number')
    parser.add_argument('--split', default='test',
                        help="test, val, train (the run's own splits) or a split spec")
    parser.add_argument('--source', default=None,
                        help='another data source, tfds:NAME or folder:PATH (then --split '
                             'names one of its splits), e.g. images the run never saw')
    parser.add_argument('--batch-size', type=int, default=None)
    args = parser.parse_args(argv)
    which = int(args.checkpoint) if args.checkpoint.isdigit() else args.checkpoint
    if which not in ('best', 'latest') and not isinstance(which, int):
        parser.error(f'--checkpoint must be best, latest or a step number, got {which!r}')
    try:
        result = evaluate_checkpoint(args.workdir, which, args.split, args.batch_size,
                                     args.source)
    except FileNotFoundError as e:   # no config.json: not a training workdir
        print(f'{parser.prog}: error: {e}', file=sys.stderr)
        return exit_codes.USAGE
    except Exception as e:   # expected failures get one paragraph and a code
        return exit_codes.report(e, parser.prog)
    where = f'{args.source}-{args.split}' if args.source else args.split
    name = re.sub(r'[^A-Za-z0-9_.%-]+', '_', f'eval-{where}-{args.checkpoint}.json')
    out = args.workdir / name
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != 'per_class_accuracy'}, indent=2))
    print('per-class accuracy: ' + ', '.join(
        f'{k} {v:.3f}' for k, v in result['per_class_accuracy'].items()))
    print(f'written to {out}')
    return 0


if __name__ == '__main__':
    from ghostnet_jax.cli_process import prepare_cli_process
    prepare_cli_process('ghostnet_jax.evaluate')
    sys.exit(main())
