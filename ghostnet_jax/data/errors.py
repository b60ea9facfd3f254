"""Exceptions raised by the data pipeline.

All derive from ``DataError`` (a ``ValueError``) so a caller can catch every
"your data/configuration is wrong" problem at once, while tests and the trainer
can still tell the specific causes apart.

Every message is written for the person running a command: it names what was asked
for (source, split, file), what was found, and what to do. A command prints it as one
paragraph (``user_message``) and exits with the data-error code of
``ghostnet_jax.cli.errors`` instead of showing a traceback: these are expected failures,
and the traceback only hides the message.
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


class InvalidSplitSpecError(DataError):
    """The split spec is malformed or selects more examples than the split has; the message
    names the split sizes."""


class EmptyClassError(DataError):
    """A class folder contains no images."""


class CorruptImageError(DataError):
    """An image file cannot be read or decoded; the message names the file."""


class MixedImageSizeError(DataError):
    """Images have different sizes and no ``image_size`` was given to resize them."""


class BatchConfigError(DataError):
    """The batch size does not fit the device count or the split size."""


def user_message(error: BaseException) -> str:
    """The one paragraph a CLI prints for an expected data failure (no traceback).

    Chained causes (``raise DataError(...) from e``) stay reachable for ``--verbose``
    through ``__cause__``; the paragraph itself is the error's own message with its kind.
    """
    kind = type(error).__name__
    text = ' '.join(str(error).split())  # One paragraph, whatever line breaks the message had.
    return f'Data error ({kind}): {text}'
