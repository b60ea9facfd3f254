"""Data pipeline: CIFAR-style image classification from TFDS or an image folder onto devices.

Host side: ``open_lazy_split`` gives a ``LazySplit`` that decodes only the rows asked
for (in multi-process runs, each process's own rows), cached as .npz; ``load_split``
is the same path reading every row into an ``ArraySplit``. Device side: ``DeviceTrainData`` / ``DeviceEvalData`` keep the
uint8 split on the devices and shuffle, augment and normalize inside jit.
"""

from ghostnet_jax.data.arrays import ArraySplit, ChannelSums, channel_stats, channel_sums
from ghostnet_jax.data.augment import AugmentConfig, augment_batch, normalize
from ghostnet_jax.data.device import DeviceEvalData, DeviceTrainData, EpochBatches
from ghostnet_jax.data.errors import (
    BatchConfigError,
    CorruptImageError,
    DataError,
    DatasetNotAvailableError,
    EmptyClassError,
    InvalidSplitSpecError,
    MixedImageSizeError,
    SplitNotFoundError,
    UnknownDatasetError,
    UnknownSourceError,
)
from ghostnet_jax.data.loader import (
    DEFAULT_SOURCE,
    DEFAULT_TEST_SPLIT,
    DEFAULT_TRAIN_SPLIT,
    DEFAULT_VALIDATION_SPLIT,
    load_split,
    parse_source,
)
from ghostnet_jax.data.placement import LocalRows, global_channel_stats
from ghostnet_jax.data.sliced import LazySplit, open_lazy_split
from ghostnet_jax.data.metrics import (ExactEvaluator, add_counts, eval_counts, evaluate,
                                       example_counts, summarize)

__all__ = [
    'ArraySplit',
    'channel_stats',
    'ChannelSums',
    'channel_sums',
    'LocalRows',
    'global_channel_stats',
    'LazySplit',
    'open_lazy_split',
    'AugmentConfig',
    'augment_batch',
    'normalize',
    'DeviceEvalData',
    'DeviceTrainData',
    'EpochBatches',
    'BatchConfigError',
    'CorruptImageError',
    'DataError',
    'DatasetNotAvailableError',
    'EmptyClassError',
    'InvalidSplitSpecError',
    'MixedImageSizeError',
    'SplitNotFoundError',
    'UnknownDatasetError',
    'UnknownSourceError',
    'DEFAULT_SOURCE',
    'DEFAULT_TEST_SPLIT',
    'DEFAULT_TRAIN_SPLIT',
    'DEFAULT_VALIDATION_SPLIT',
    'load_split',
    'parse_source',
    'ExactEvaluator',
    'example_counts',
    'add_counts',
    'eval_counts',
    'evaluate',
    'summarize',
]
