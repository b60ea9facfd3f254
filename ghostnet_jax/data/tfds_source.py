"""Reader for ``tfds:NAME`` sources without TensorFlow.

Without TensorFlow, TFDS can still serve prepared datasets through
``tfds.data_source`` (array_record files, random access, numpy decoding), so the
dataset is read record by record into one uint8 array. ``tfds.load`` and
``tfds.as_numpy`` would need TensorFlow.

Preparing (``prepare``, also ``python -m ghostnet_jax.prepare_data``): when the
dataset is not prepared in ``data_dir``, TFDS would retry an unreachable download
for ~200 s before failing. We first check, with a short timeout, that the download
URLs of archives not already on the machine answer an HTTP HEAD request, and fail
fast with an actionable message otherwise. In a multi-process run only process 0
prepares; the others wait for its outcome (``_ensure_prepared``).

Split specs are checked against the prepared dataset's own split sizes first, so a
missing split or an oversized slice is a ``SplitNotFoundError`` /
``InvalidSplitSpecError`` naming the sizes, not a TFDS KeyError.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import requests
import tensorflow_datasets as tfds
from etils import epath

from ghostnet_jax.data import images as images_lib
from ghostnet_jax.data import splits as splits_lib
from ghostnet_jax.data.arrays import ArraySplit
from ghostnet_jax.data.errors import DataError, DatasetNotAvailableError, UnknownDatasetError

log = logging.getLogger(__name__)


class _NoVariantFolderWarning(logging.Filter):
    """Drops TFDS's "Variant folder ... has no dataset_info.json" warning.

    TFDS logs it (even for a folder that does not exist) every time it checks whether a
    dataset is prepared; for a user it is noise before our own message, which says what
    is missing and what to do.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            isinstance(record.msg, str)
            and record.msg.startswith('Variant folder')
            and 'has no' in record.msg
        )


logging.getLogger('absl').addFilter(_NoVariantFolderWarning())

_FILE_FORMAT = 'array_record'  # The only random-access format readable without TensorFlow.


def resolve_data_dir(data_dir: str | None) -> str:
    """``data_dir`` argument, else ``$TFDS_DATA_DIR`` (read now, not at TFDS import), else TFDS's
    default."""
    if data_dir:
        return os.fspath(data_dir)
    if os.environ.get('TFDS_DATA_DIR'):
        return os.environ['TFDS_DATA_DIR']
    return os.path.expanduser('~/tensorflow_datasets')


@dataclasses.dataclass(frozen=True)
class TfdsHandle:
    source: Sequence[Any]  # tfds ArrayRecordDataSource (len + __getitem__).
    class_names: tuple[str, ...]
    files: tuple[str, ...]  # array_record files of the dataset (for the cache key).
    version: str
    data_dir: str


def _unavailable_message(name: str, data_dir: str, why: str) -> str:
    return (
        f'TFDS dataset {name!r} is not available: {why.rstrip(".")}. Searched data_dir={data_dir} '
        '(set by data.data_dir or $TFDS_DATA_DIR). Either prepare it there once, with TensorFlow '
        f"installed (pip install -e '.[prepare]'): python -m ghostnet_jax.prepare_data "
        f'--dataset {name} --data-dir {data_dir} (online, or offline with the downloaded archive '
        'in '
        "--manual-dir DIR); or use an image folder instead: source='folder:PATH' with "
        'PATH/<split>/<class_name>/*.jpg|png.'
    )


def _downloads_reachable(urls: Sequence[str], timeout: float) -> tuple[bool, str]:
    """Whether each download URL answers an HTTP HEAD within ``timeout`` (proxies from the
    environment).

    A TCP connect is not enough: intercepting proxies accept every connection and
    only fail the request (e.g. "426 Upgrade Required"), which TFDS retries for minutes.
    """
    for url in urls:
        try:
            r = requests.head(url, timeout=timeout, allow_redirects=True)
        except requests.RequestException as e:
            return False, f'cannot reach {url} ({type(e).__name__}: {e})'
        if r.status_code >= 400:
            return False, f'{url} answered HTTP {r.status_code}'
    return True, ''


def _builder_kwargs() -> dict[str, Any]:
    return {'file_format': _FILE_FORMAT}


def _builder(name: str, data_dir: str) -> Any:
    try:
        return tfds.builder(name, data_dir=data_dir, **_builder_kwargs())
    except tfds.core.registered.DatasetNotFoundError as e:
        raise UnknownDatasetError(
            f'TFDS has no dataset named {name!r} (source tfds:{name}). Check the spelling against '
            "tfds.list_builders(), or use source='folder:PATH' for your own images."
        ) from e


def _split_sizes(builder: Any) -> dict[str, int]:
    """{split name: examples} from the prepared dataset's info (empty if not prepared or mocked)."""
    try:
        return {str(k): int(v.num_examples) for k, v in builder.info.splits.items()}
    except Exception:  # Mocked or half-written infos: nothing to check against.
        return {}


def _check_spec(name: str, spec: str, builder: Any) -> None:
    """Raises SplitNotFoundError / InvalidSplitSpecError naming the prepared splits' sizes.

    TFDS itself would report a missing split as a KeyError that reads like "not
    prepared", and an oversized slice deep inside its reader; checking first against
    the dataset's own split sizes gives the same answer as TFDS's slicing, in words.
    """
    sizes = _split_sizes(builder)
    if sizes:
        try:
            splits_lib.absolute_ranges(spec, sizes)
        except DataError as e:
            raise type(e)(f'tfds:{name}: {e}') from e


def _missing_downloads(builder: Any, download_dir: str | None, manual_dir: str | None) -> list[str]:
    """URLs of the builder's registered downloads that are not already on this machine.

    A file counts as present in TFDS's manual dir (under its registered file name) or in
    its download cache (the name TFDS derives from URL and checksum, with its .INFO file):
    where TFDS itself would take it from instead of downloading.
    """
    from tensorflow_datasets.core.download import resource as resource_lib

    infos = getattr(type(builder), 'url_infos', None) or {}
    root = epath.Path(download_dir) if download_dir else builder.data_dir_root / 'downloads'
    manual = epath.Path(manual_dir) if manual_dir else root / 'manual'
    missing = []
    for url, info in infos.items():
        if info.filename and (manual / info.filename).exists():
            continue
        if resource_lib.is_locally_cached(root / resource_lib.get_dl_fname(url, info.checksum)):
            continue
        missing.append(url)
    return missing


def prepare(
    name: str,
    data_dir: str | None = None,
    *,
    download_dir: str | None = None,
    manual_dir: str | None = None,
    download_timeout: float = 10.0,
) -> str:
    """Downloads and prepares a TFDS dataset as array_record in ``data_dir``; returns its path.

    Needs TensorFlow (TFDS's builders read the archives and encode images with it) and,
    unless the archives are already in ``manual_dir`` / ``download_dir``, the internet.
    Fails fast with ``DatasetNotAvailableError`` when the download hosts cannot be
    reached, instead of TFDS's minutes of retries. Does nothing if already prepared.
    Prepared copies on TFDS's GCS bucket are not used: they are TFRecord, which cannot be
    read without TensorFlow.
    """
    data_dir = resolve_data_dir(data_dir)
    builder = _builder(name, data_dir)
    if builder.is_prepared():
        return os.fspath(builder.data_path)
    missing = _missing_downloads(builder, download_dir, manual_dir)
    ok, why = _downloads_reachable(missing, download_timeout)
    if not ok:
        raise DatasetNotAvailableError(
            _unavailable_message(
                name, data_dir, f'it is not prepared and the download failed: {why}'
            )
        )
    if importlib.util.find_spec('tensorflow') is None:
        raise DatasetNotAvailableError(
            _unavailable_message(
                name,
                data_dir,
                'it is not prepared, and preparing it (a one-time download and conversion) needs '
                "TensorFlow: pip install 'ghostnet_jax[prepare]'",
            )
        )
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    log.info('Preparing tfds:%s in %s (array_record)', name, builder.data_dir)
    try:
        builder.download_and_prepare(download_dir=download_dir, download_config=config)
    except Exception as e:  # Network, archive and disk failures all mean "not available".
        raise DatasetNotAvailableError(
            _unavailable_message(
                name, data_dir, f'download/preparation failed: {type(e).__name__}: {e}'
            )
        ) from e
    return os.fspath(builder.data_path)


def prepare_and_describe(name: str, data_dir: str | None = None, **kwargs: Any) -> str:
    """`prepare`, then one line naming where the dataset is and its split sizes
    (`python -m ghostnet_jax.prepare_data`)."""
    path = prepare(name, data_dir, **kwargs)
    info = tfds.builder(name, data_dir=resolve_data_dir(data_dir), file_format='array_record').info
    sizes = ', '.join(f'{k} {v.num_examples}' for k, v in sorted(info.splits.items()))
    return f'Prepared tfds:{name} in {path} ({sizes}).'


def _ensure_prepared(
    name: str, data_dir: str, open_: Any, *, download: bool, download_timeout: float
) -> Any:
    """``open_()`` (the data source), preparing the dataset first if needed and allowed.

    One process: prepare if it cannot be opened. Several processes (a pod): process 0
    alone prepares, then tells the others through a collective whether it succeeded,
    so they neither race it on a shared data_dir (gs://) nor wait forever when it failed.
    Every process must therefore open the same splits in the same order (the trainer does);
    a process whose data_dir is not shared with process 0 prepares its own copy.
    """
    import jax

    def try_open() -> tuple[Any, BaseException | None]:
        try:
            return open_(), None
        except (AssertionError, KeyError, FileNotFoundError) as e:  # Not prepared locally.
            return None, e

    def not_available(why: str) -> DatasetNotAvailableError:
        return DatasetNotAvailableError(_unavailable_message(name, data_dir, why))

    if jax.process_count() == 1 or not download:
        source, cause = try_open()
        if source is not None:
            return source
        if not download:
            raise not_available('it is not prepared locally and download=False') from cause
        prepare(name, data_dir, download_timeout=download_timeout)
        return open_()

    from jax.experimental import multihost_utils

    error: DataError | None = None
    if jax.process_index() == 0:
        source, _ = try_open()
        if source is None:
            try:
                prepare(name, data_dir, download_timeout=download_timeout)
            except DataError as e:
                error = e
    # Also the barrier: nobody opens before process 0 has finished preparing.
    ok = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if error is not None:
        raise error
    if not ok:
        raise not_available(
            'process 0 of this multi-process run could not prepare it (its log says why)'
        )
    source, cause = try_open()
    if source is None:
        log.warning(
            'tfds:%s: data_dir %s is not shared with process 0, which prepared its own '
            'copy; this process prepares another. Use one shared data_dir (e.g. '
            'gs://BUCKET/tensorflow_datasets) to prepare once.',
            name,
            data_dir,
        )
        prepare(name, data_dir, download_timeout=download_timeout)
        source = open_()
    return source


def open_split(
    name: str,
    split: str,
    data_dir: str | None,
    *,
    download: bool = True,
    download_timeout: float = 10.0,
) -> TfdsHandle:
    data_dir = resolve_data_dir(data_dir)
    builder = _builder(name, data_dir)
    features = builder.info.features
    if 'image' not in features or 'label' not in features:
        raise DataError(
            f'TFDS dataset {name!r} has features {list(features)}; an image-classification '
            "dataset with 'image' and 'label' features is required."
        )
    # A prepared dataset answers split questions before any reader is built.
    was_prepared = bool(_split_sizes(builder))
    _check_spec(name, split, builder)

    def open_():
        return tfds.data_source(
            name,
            split=split,
            data_dir=data_dir,
            download=False,
            builder_kwargs=_builder_kwargs(),
        )

    try:
        source = _ensure_prepared(
            name, data_dir, open_, download=download, download_timeout=download_timeout
        )
    except NotImplementedError as e:  # Prepared, but as TFRecord: unreadable without TensorFlow.
        raise DatasetNotAvailableError(
            _unavailable_message(
                name, data_dir, f'it is prepared in a format other than array_record ({e})'
            )
        ) from e
    except RuntimeError as e:  # array_record's reader failed to open a file.
        hint = (
            ' array_record cannot open gs:// files yet (google/array_record#120): copy the '
            'prepared dataset folder to local disk and point data_dir there.'
            if '://' in data_dir
            else ''
        )
        raise DatasetNotAvailableError(
            _unavailable_message(name, data_dir, f'its files cannot be opened ({e}).{hint}')
        ) from e
    if not was_prepared:
        # Prepared just now (or mocked): the new info has the split sizes and class names.
        builder = _builder(name, data_dir)
        features = builder.info.features
        _check_spec(name, split, builder)

    names = tuple(
        getattr(features['label'], 'names', None)
        or [str(i) for i in range(features['label'].num_classes)]
    )
    data_path = Path(os.fspath(builder.data_path))
    files = (
        tuple(sorted(str(p) for p in data_path.glob('*.array_record*')))
        if data_path.is_dir()
        else ()
    )
    return TfdsHandle(source, names, files, str(builder.version), data_dir)


def read(
    handle: TfdsHandle,
    name: str,
    image_size: int | None = None,
    indices: Sequence[int] | None = None,
) -> ArraySplit:
    """Reads the records ``indices`` (default: all) of the split into host arrays.

    The data source has random access, so a process of a multi-host run reads only its rows.
    """
    images, labels, ids = [], [], []
    for i in range(len(handle.source)) if indices is None else indices:
        ex = handle.source[i]
        image = np.asarray(ex['image'], np.uint8)
        if image.ndim == 2:
            image = image[..., None]
        images.append(images_lib.resize(image, image_size) if image_size else image)
        labels.append(int(ex['label']))
        ids.append(f'record {i}')
    return ArraySplit(
        images=images_lib.stack(images, ids, context=name),
        labels=np.asarray(labels, np.int32),
        class_names=handle.class_names,
        name=name,
    )
