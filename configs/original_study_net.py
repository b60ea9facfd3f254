"""The original Keras study's own network (`ghost_study_net`) on the study's recipe, done
properly: configs/original_study.py (Adam 1e-3, batch 32, 20 epochs, early stopping and
ReduceLROnPlateau on val_loss) with the real validation split train[90%:] (the study
validated on the test set and reported ~64%), no dropout (the study's net had none) and
evaluation batches of 100 (memory; the net keeps 512 channels at 32x32).

Commands (augmentation off, as the study; then on; with tfds:cifar10 prepared drop the
two data overrides):
    python -m ghostnet_jax.train --config configs/original_study_net.py \\
        --config.data.source=folder:DATA --config.data.test_split='' --workdir runs/study_net
    python -m ghostnet_jax.train --config configs/original_study_net.py \\
        --config.data.source=folder:DATA --config.data.test_split='' \\
        --config.data.augment.crop_padding=4 --config.data.augment.flip=True \\
        --workdir runs/study_net_augment

What the network is and which of its details are reconstructed:
ghostnet_jax/models/study_net.py (453,322 parameters, 188M MACs per image).
Expected after 1 epoch (--config.num_epochs=1; 2-core CPU, 2026-12-07): 40.44% with
augmentation off, 39.58% on (docs/experiments.md); after the 20 epochs (~4.4 h on 2 CPU
cores): not yet measured.
"""

from ghostnet_jax.configs import original_study


def get_config():
    config = original_study.get_config()
    config.model.name = 'ghost_study_net'
    config.model.dropout_rate = 0.0
    # Its four Ghost modules keep 512 channels at 32x32: a run evaluating 500 images at a
    # time held 12.9 GB of host memory on the CPU (2026-12-07), one at 100 peaked at 5.4 GB.
    config.eval_batch_size = 100
    return config
