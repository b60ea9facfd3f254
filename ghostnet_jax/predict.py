"""Classify image files with a trained run (or converted ImageNet weights).

    python -m ghostnet_jax.predict --workdir DIR IMAGE_OR_FOLDER... [--top-k 5]
        [--format text|json|csv] [--checkpoint best|latest|STEP] [--batch-size 32]
        [--skip-unreadable] [--progress auto|always|never] [--verbose]

DIR is a training workdir, its checkpoints/ directory, one step directory, or the output
of `python -m ghostnet_jax.convert`. Images are resized as the model was trained; folders
are searched recursively. Results go to stdout, a progress bar to stderr when it is a
terminal. A run evaluated with eval_flip averages each image with its mirror here too.

Exit codes: 0 ok, 1 unexpected, 2 usage, 4 data (unreadable image, nothing to read),
5 checkpoint. An unreadable image stops the run and is named, unless --skip-unreadable.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from ghostnet_jax.cli import errors, flags

PROG = 'python -m ghostnet_jax.predict'


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> int:
    parser = flags.command_parser(PROG, __doc__)
    parser.add_argument('inputs', nargs='+', metavar='IMAGE_OR_FOLDER')
    flags.add(
        parser,
        '--workdir',
        required=True,
        help='training workdir, checkpoints/ dir, step dir or convert output',
    )
    flags.add(parser, '--checkpoint', default='best', help='best (default), latest or a step')
    flags.add(parser, '--top-k', type=int, default=5)
    flags.add(parser, '--format', choices=('text', 'json', 'csv'), default='text')
    flags.add(parser, '--batch-size', type=int, default=32, help='images decoded and run at once')
    flags.add(
        parser,
        '--skip-unreadable',
        action='store_true',
        help='report unreadable images on stderr and go on (default: stop, exit 4)',
    )
    flags.add(
        parser,
        '--progress',
        choices=('auto', 'always', 'never'),
        default='auto',
        help='progress bar on stderr (auto: only when stderr is a terminal)',
    )
    args, _ = flags.parse(parser, argv)
    if not errors.verbose(argv if argv is not None else sys.argv[1:]):
        logging.getLogger('absl').setLevel(logging.ERROR)  # orbax's read-only notices

    def body() -> int:
        if args.top_k < 1:
            raise errors.UsageError(f'--top-k must be at least 1, got {args.top_k}.')
        if args.batch_size < 1:
            raise errors.UsageError(f'--batch-size must be at least 1, got {args.batch_size}.')
        which = flags.checkpoint(args.checkpoint)
        from ghostnet_jax.serving.classify import classify_files  # jax: after the checks

        classify_files(
            args.workdir,
            args.inputs,
            which,
            top_k=args.top_k,
            fmt=args.format,
            batch_size=args.batch_size,
            skip_unreadable=args.skip_unreadable,
            progress={'auto': None, 'always': True, 'never': False}[args.progress],
            out=stdout,
        )
        return errors.OK

    return errors.run_command(PROG, body, argv)


if __name__ == '__main__':
    sys.exit(main())
