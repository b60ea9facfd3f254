"""Per-layer summary of a registered model (the original study's layer table, done properly).

    python -m ghostnet_jax.summary --model ghostnet_cifar_100 [--input-size 32]
        [--num-classes 10] [--format text|markdown|csv]
"""
from __future__ import annotations

import argparse
import sys

from ghostnet_jax.layer_table import format_table, layer_table
from ghostnet_jax.models import create_model, list_models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m ghostnet_jax.summary', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', required=True, help='one of: ' + ', '.join(list_models()))
    parser.add_argument('--input-size', type=int, default=None,
                        help='square input side (default: 32 for CIFAR models, 224 otherwise)')
    parser.add_argument('--num-classes', type=int, default=None)
    parser.add_argument('--format', choices=('text', 'markdown', 'csv'), default='text')
    args = parser.parse_args(argv)

    if args.model not in list_models():
        parser.error(f'unknown model {args.model!r}; valid names: {", ".join(list_models())}')
    overrides = {} if args.num_classes is None else {'num_classes': args.num_classes}
    model = create_model(args.model, **overrides)
    input_size = args.input_size or (224 if args.model.startswith('ghostnet_') and
                                     'cifar' not in args.model else 32)
    print(format_table(layer_table(model, input_size), args.format))
    return 0


if __name__ == '__main__':
    sys.exit(main())
