"""The original Keras study's setup, on the faithful GhostNet-CIFAR 1.0x.

The study trained a four-Ghost-module toy net: pixels / 255, Adam 1e-3, batch 32, 20 epochs,
no augmentation, the test set as validation (~64% with clear overfitting), then early
stopping (patience 5, restore best) and ReduceLROnPlateau (factor 0.5, patience 3), both on
Keras's default monitor val_loss. Here: the same input scaling, optimizer (Keras's Adam
epsilon included), batch, epochs and callbacks, but a real validation split carved from
train (the test split stays untouched until the end). Augmentation stays off, to keep the
study's overfitting visible in the learning curves; turn it on with
--config.data.augment.crop_padding=4 --config.data.augment.flip=True.

Command:
    python -m ghostnet_jax.train --config configs/original_study.py

Expected result: not yet measured (20 epochs of GhostNet-CIFAR 1.0x need ~4 CPU hours here).
"""

from ghostnet_jax.configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'ghostnet_cifar_100'
    config.batch_size = 32
    config.num_epochs = 20
    config.data.augment.crop_padding = 0
    config.data.augment.flip = False
    # Keras's Adam: epsilon 1e-7 (optax's default is 1e-8).
    config.optimizer.update(
        dict(
            name='adam',
            learning_rate=1e-3,
            eps=1e-7,
            schedule='constant',
            warmup_epochs=0.0,
            weight_decay=0.0,
        )
    )
    # The study's input scaling: pixels / 255, no per-channel statistics.
    config.data.mean = (0.0, 0.0, 0.0)
    config.data.std = (255.0, 255.0, 255.0)
    config.callbacks.early_stopping.update(
        dict(enabled=True, monitor='val_loss', mode='min', patience=5, restore_best=True)
    )
    config.callbacks.reduce_lr_on_plateau.update(
        dict(enabled=True, monitor='val_loss', factor=0.5, patience=3)
    )
    return config
