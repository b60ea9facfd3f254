"""Evaluate a training run's checkpoint on a split.

    python -m ghostnet_jax.evaluate --workdir runs/X [--checkpoint best|latest|STEP]
        [--split test|val|train|SPLIT_SPEC] [--source tfds:NAME|folder:PATH] [--batch-size N]

Rebuilds the model from the checkpoint's stored spec (architecture, classes, input
normalization, eval_flip), reads the split (of the run's data source or --source), counts
every example exactly once with the trainer's evaluator, prints the metrics and writes
them to WORKDIR/eval-<split>-<checkpoint>.json. Exit codes: docs/reliability.md.
"""

from __future__ import annotations

import json
import re
import sys

from ghostnet_jax.cli import errors, flags

PROG = 'python -m ghostnet_jax.evaluate'


def main(argv: list[str] | None = None) -> int:
    parser = flags.command_parser(PROG, __doc__)
    flags.add(parser, '--workdir', required=True)
    flags.add(parser, '--checkpoint', default='best', help='best, latest or a step number')
    flags.add(
        parser,
        '--split',
        default='test',
        help="test, val, train (the run's own splits) or a split spec",
    )
    flags.add(
        parser,
        '--source',
        default=None,
        help='another data source, tfds:NAME or folder:PATH (then --split names one of '
        'its splits), e.g. images the run never saw',
    )
    flags.add(parser, '--batch-size', type=int, default=None)
    args, _ = flags.parse(parser, argv)

    def body() -> int:
        which = flags.checkpoint(args.checkpoint)
        from etils import epath

        from ghostnet_jax.serving.evaluation import evaluate_checkpoint

        result = evaluate_checkpoint(args.workdir, which, args.split, args.batch_size, args.source)
        where = f'{args.source}-{args.split}' if args.source else args.split
        name = re.sub(r'[^A-Za-z0-9_.%-]+', '_', f'eval-{where}-{args.checkpoint}.json')
        out = epath.Path(args.workdir) / name
        out.write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k != 'per_class_accuracy'}, indent=2))
        print(
            'per-class accuracy: '
            + ', '.join(f'{k} {v:.3f}' for k, v in result['per_class_accuracy'].items())
        )
        print(f'written to {out}')
        return errors.OK

    return errors.run_command(PROG, body, argv)


if __name__ == '__main__':
    from ghostnet_jax.cli.process import prepare_process

    prepare_process()
    sys.exit(main())
