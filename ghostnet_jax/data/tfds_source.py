"""Reader for ``tfds:NAME`` sources without TensorFlow.

Without TensorFlow, TFDS can still serve prepared datasets through
``tfds.data_source`` (array_record files, random access, numpy decoding), so the
dataset is read record by record into one uint8 array. ``tfds.load`` and
``tfds.as_numpy`` would need TensorFlow.

Downloads: when the dataset is not prepared in ``data_dir``, TFDS would retry an
unreachable download for ~200 s before failing. We first check, with a short
timeout, that the download URLs answer an HTTP HEAD request, and fail fast with
an actionable message otherwise.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import requests
import tensorflow_datasets as tfds

from ghostnet_jax.data import images as images_lib
from ghostnet_jax.data.arrays import ArraySplit
from ghostnet_jax.data.errors import DataError, DatasetNotAvailableError, UnknownDatasetError

_FILE_FORMAT = 'array_record'  # The only random-access format readable without TensorFlow.


def resolve_data_dir(data_dir: str | None) -> str:
    """``data_dir`` argument, else ``$TFDS_DATA_DIR`` (read now, not at TFDS import), else TFDS's default."""
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
        f'TFDS dataset {name!r} is not available: {why}. Searched data_dir={data_dir} '
        '(set by the data_dir argument or $TFDS_DATA_DIR). Either prepare it there in array_record '
        f'format on a machine with internet (tfds.data_source({name!r}, data_dir=..., '
        "builder_kwargs={'file_format': 'array_record'})), or use an image folder instead: "
        "source='folder:PATH' with PATH/<split>/<class_name>/*.jpg|png."
    )


def _downloads_reachable(urls: Sequence[str], timeout: float) -> tuple[bool, str]:
    """Whether each download URL answers an HTTP HEAD (proxies from the environment) within ``timeout``.

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


def open_split(
    name: str,
    split: str,
    data_dir: str | None,
    *,
    download: bool = True,
    download_timeout: float = 10.0,
) -> TfdsHandle:
    data_dir = resolve_data_dir(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir, **_builder_kwargs())
    except tfds.core.registered.DatasetNotFoundError as e:
        raise UnknownDatasetError(
            f'TFDS has no dataset named {name!r} (source tfds:{name}). Check the spelling against '
            "tfds.list_builders(), or use source='folder:PATH' for your own images."
        ) from e
    features = builder.info.features
    if 'image' not in features or 'label' not in features:
        raise DataError(
            f'TFDS dataset {name!r} has features {list(features)}; an image-classification '
            "dataset with 'image' and 'label' features is required."
        )

    def _open(download_now: bool):
        return tfds.data_source(
            name,
            split=split,
            data_dir=data_dir,
            download=download_now,
            builder_kwargs=_builder_kwargs(),
        )

    try:
        source = _open(False)
    except NotImplementedError as e:  # Prepared, but as TFRecord: unreadable without TensorFlow.
        raise DatasetNotAvailableError(
            _unavailable_message(
                name, builder.data_dir, f'it is prepared in a format other than array_record ({e})'
            )
        ) from e
    except (AssertionError, KeyError, FileNotFoundError) as e:
        # Not prepared locally (TFDS raises AssertionError or KeyError depending on the path taken).
        if not download:
            raise DatasetNotAvailableError(
                _unavailable_message(
                    name, builder.data_dir, 'it is not prepared locally and download=False'
                )
            ) from e
        urls = list(getattr(type(builder), 'url_infos', None) or {})
        ok, why = _downloads_reachable(urls, download_timeout)
        if not ok:
            raise DatasetNotAvailableError(
                _unavailable_message(
                    name,
                    builder.data_dir,
                    f'it is not prepared locally and the download failed: {why}',
                )
            ) from e
        if importlib.util.find_spec('tensorflow') is None:
            # TFDS's builders (cifar10's included) read the downloaded archives and encode images
            # with TensorFlow; only reading prepared array_record files works without it.
            raise DatasetNotAvailableError(
                _unavailable_message(
                    name,
                    builder.data_dir,
                    'it is not prepared locally, and preparing it (a one-time '
                    "download and conversion) needs TensorFlow: pip install 'ghostnet_jax[prepare]' "
                    '(tensorflow-cpu)',
                )
            ) from e
        try:
            source = _open(True)
        except (
            Exception
        ) as e2:  # Network/preparation failures come in many types; all mean "not available".
            raise DatasetNotAvailableError(
                _unavailable_message(
                    name,
                    builder.data_dir,
                    f'download/preparation failed: {type(e2).__name__}: {e2}',
                )
            ) from e2

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
