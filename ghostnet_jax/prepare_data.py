"""Prepare a TFDS dataset once, as array_record, where training runs will read it:

    python -m ghostnet_jax.prepare_data --dataset cifar10 [--data-dir DIR|gs://BUCKET/tfds]
        [--download-dir DIR] [--manual-dir DIR]

Needs TensorFlow (``pip install -e '.[prepare]'``) and, unless the dataset's archives are
already in ``--manual-dir`` (e.g. ``cifar-10-binary.tar.gz`` fetched by hand) or TFDS's
download cache, the internet. Training reads the prepared files without TensorFlow.
On a pod, run it once (from any one machine) into the shared ``--data-dir`` before
launching the workers; otherwise process 0 of the run prepares and the others wait.

Exit status: 0 prepared (or already there), 4 data error (one paragraph, no traceback;
``--verbose`` or GHOSTNET_JAX_VERBOSE=1 shows it), 2 usage error.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from ghostnet_jax.data.errors import DataError, user_message


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m ghostnet_jax.prepare_data',
        description='Download and prepare a TFDS dataset as array_record (once per data_dir).')
    parser.add_argument('--dataset', default='cifar10', help='TFDS name, e.g. cifar10, cifar100.')
    parser.add_argument('--data-dir', default=None,
                        help='TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets); '
                             'gs:// paths work with the tpu extra.')
    parser.add_argument('--download-dir', default=None,
                        help='Where archives are downloaded/cached (default DATA_DIR/downloads).')
    parser.add_argument('--manual-dir', default=None,
                        help='A folder holding the archives already (e.g. cifar-10-binary.tar.gz); '
                             'they are checked against the checksums TFDS registers.')
    parser.add_argument('--download-timeout', type=float, default=10.0,
                        help='Seconds to wait for the download hosts before giving up.')
    parser.add_argument('--verbose', action='store_true',
                        help='Show the traceback of a data error too.')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    verbose = args.verbose or os.environ.get('GHOSTNET_JAX_VERBOSE') == '1'
    from ghostnet_jax.data import tfds_source
    try:
        path = tfds_source.prepare(args.dataset, args.data_dir, download_dir=args.download_dir,
                                   manual_dir=args.manual_dir,
                                   download_timeout=args.download_timeout)
        import tensorflow_datasets as tfds
        info = tfds.builder(args.dataset, data_dir=tfds_source.resolve_data_dir(args.data_dir),
                            file_format='array_record').info
    except DataError as e:
        if verbose:
            traceback.print_exc()
        print(user_message(e), file=sys.stderr)
        return e.exit_code
    sizes = ', '.join(f'{k} {v.num_examples}' for k, v in sorted(info.splits.items()))
    print(f'Prepared tfds:{args.dataset} in {path} ({sizes}).')
    return 0


if __name__ == '__main__':
    sys.exit(main())
