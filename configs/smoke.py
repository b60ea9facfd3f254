"""Tiny CPU recipe for tests and a first look: the 3-bottleneck quarter-width
ghostnet_cifar_tiny on a folder dataset, a few steps.

Command (with a small folder dataset PATH/train/<class>/*.png, e.g. the one tests/ generate):
    python -m ghostnet_jax.train --config configs/smoke.py --config.data.source=folder:PATH
Expected: runs end to end in well under a minute on 2 CPU cores; accuracy is meaningless.
"""

from ghostnet_jax.configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'ghostnet_cifar_tiny'
    config.model.dropout_rate = 0.0
    config.data.train_split = 'train[:80%]'
    config.data.val_split = 'train[80%:]'
    config.data.test_split = ''
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_epochs = 2
    config.log_every_steps = 2
    config.optimizer.warmup_epochs = 0.0
    config.optimizer.learning_rate = 0.05
    return config
