"""Prepare a TFDS dataset once, as array_record, where training runs will read it:

    python -m ghostnet_jax.prepare_data --dataset cifar10 [--data-dir DIR|gs://BUCKET/tfds]
        [--download-dir DIR] [--manual-dir DIR] [--download-timeout 10]

Needs TensorFlow (``pip install -e '.[prepare]'``) and, unless the dataset's archives are
already in ``--manual-dir`` (e.g. ``cifar-10-binary.tar.gz`` fetched by hand) or TFDS's
download cache, the internet. Training reads the prepared files without TensorFlow.
On a pod, run it once (from any one machine) into the shared ``--data-dir`` before
launching the workers; otherwise process 0 of the run prepares and the others wait.

Exit status: 0 prepared (or already there), 4 data error (one paragraph, no traceback;
``--verbose`` or GHOSTNET_JAX_VERBOSE=1 shows it), 2 usage error.
"""

from __future__ import annotations

import sys

from ghostnet_jax.cli import errors, flags

PROG = 'python -m ghostnet_jax.prepare_data'


def main(argv: list[str] | None = None) -> int:
    parser = flags.command_parser(PROG, __doc__)
    flags.add(parser, '--dataset', default='cifar10', help='TFDS name, e.g. cifar10, cifar100.')
    flags.add(
        parser,
        '--data-dir',
        default=None,
        help='TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets); gs:// '
        'paths work with the tpu extra.',
    )
    flags.add(
        parser,
        '--download-dir',
        default=None,
        help='where archives are downloaded/cached (default DATA_DIR/downloads)',
    )
    flags.add(
        parser,
        '--manual-dir',
        default=None,
        help='a folder holding the archives already (e.g. cifar-10-binary.tar.gz); '
        'they are checked against the checksums TFDS registers',
    )
    flags.add(
        parser,
        '--download-timeout',
        type=float,
        default=10.0,
        help='seconds to wait for the download hosts before giving up',
    )
    args, _ = flags.parse(parser, argv)

    def body() -> int:
        from ghostnet_jax.data.tfds_source import prepare_and_describe

        print(
            prepare_and_describe(
                args.dataset,
                args.data_dir,
                download_dir=args.download_dir,
                manual_dir=args.manual_dir,
                download_timeout=args.download_timeout,
            )
        )
        return errors.OK

    return errors.run_command(PROG, body, argv)


if __name__ == '__main__':
    from ghostnet_jax.cli.process import setup_logging

    setup_logging()
    sys.exit(main())
