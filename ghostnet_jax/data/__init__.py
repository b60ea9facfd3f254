"""Data pipeline: CIFAR-style image classification from TFDS or an image folder onto devices.

Host side: ``open_lazy_split`` gives a ``LazySplit`` that decodes only the rows asked for
(in multi-process runs, each process's own rows), cached as .npz; ``load_split`` is the
same path reading every row into an ``ArraySplit``. Device side: ``DeviceTrainData`` /
``DeviceEvalData`` keep the uint8 split on the devices and shuffle, augment and normalize
inside jit. Streamed side (``stream.StreamTrainData`` / ``StreamEvalData``,
``data.pipeline``): batches read with Grain from single rows (``rows.py``) while the
devices train, for data that does not fit them; ``pipeline.choose`` decides between the
two.
"""

import importlib
from typing import Any

# Imported on first use: Grain's worker processes unpickle ghostnet_jax.data.rows, and
# must not pay for JAX (which device.py imports) to decode images.
_EXPORTS = {
    'ArraySplit': 'ghostnet_jax.data.arrays',
    'ChannelSums': 'ghostnet_jax.data.arrays',
    'channel_stats': 'ghostnet_jax.data.arrays',
    'channel_sums': 'ghostnet_jax.data.arrays',
    'AugmentConfig': 'ghostnet_jax.data.augment',
    'augment_batch': 'ghostnet_jax.data.augment',
    'normalize': 'ghostnet_jax.data.augment',
    'DeviceEvalData': 'ghostnet_jax.data.device',
    'DeviceTrainData': 'ghostnet_jax.data.device',
    'EpochBatches': 'ghostnet_jax.data.device',
    'BatchConfigError': 'ghostnet_jax.data.errors',
    'CorruptImageError': 'ghostnet_jax.data.errors',
    'DataError': 'ghostnet_jax.data.errors',
    'DatasetNotAvailableError': 'ghostnet_jax.data.errors',
    'EmptyClassError': 'ghostnet_jax.data.errors',
    'InvalidSplitSpecError': 'ghostnet_jax.data.errors',
    'MixedImageSizeError': 'ghostnet_jax.data.errors',
    'SplitNotFoundError': 'ghostnet_jax.data.errors',
    'UnknownDatasetError': 'ghostnet_jax.data.errors',
    'UnknownSourceError': 'ghostnet_jax.data.errors',
    'DEFAULT_SOURCE': 'ghostnet_jax.data.loader',
    'DEFAULT_TEST_SPLIT': 'ghostnet_jax.data.loader',
    'DEFAULT_TRAIN_SPLIT': 'ghostnet_jax.data.loader',
    'DEFAULT_VALIDATION_SPLIT': 'ghostnet_jax.data.loader',
    'load_split': 'ghostnet_jax.data.loader',
    'parse_source': 'ghostnet_jax.data.loader',
    'LocalRows': 'ghostnet_jax.data.placement',
    'global_channel_stats': 'ghostnet_jax.data.placement',
    'LazySplit': 'ghostnet_jax.data.sliced',
    'open_lazy_split': 'ghostnet_jax.data.sliced',
    'ExactEvaluator': 'ghostnet_jax.data.metrics',
    'add_counts': 'ghostnet_jax.data.metrics',
    'eval_counts': 'ghostnet_jax.data.metrics',
    'evaluate': 'ghostnet_jax.data.metrics',
    'example_counts': 'ghostnet_jax.data.metrics',
    'summarize': 'ghostnet_jax.data.metrics',
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


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
