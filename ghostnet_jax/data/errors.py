"""Exceptions raised by the data pipeline.

All derive from ``DataError`` (a ``ValueError``) so a caller can catch every
"your data/configuration is wrong" problem at once, while tests and the trainer
can still tell the specific causes apart.
"""

from __future__ import annotations


class DataError(ValueError):
    """Base class: the requested data cannot be provided as configured."""


class UnknownSourceError(DataError):
    """The ``source`` string is neither ``tfds:NAME`` nor ``folder:PATH``."""


class UnknownDatasetError(DataError):
    """TFDS has no dataset registered under the requested name."""


class DatasetNotAvailableError(DataError):
    """A TFDS dataset is not prepared locally and could not be downloaded."""


class SplitNotFoundError(DataError):
    """The split named in the split spec does not exist (e.g. no ``PATH/test``)."""


class EmptyClassError(DataError):
    """A class folder contains no images."""


class CorruptImageError(DataError):
    """An image file cannot be read or decoded; the message names the file."""


class MixedImageSizeError(DataError):
    """Images have different sizes and no ``image_size`` was given to resize them."""


class BatchConfigError(DataError):
    """The batch size does not fit the device count or the split size."""
