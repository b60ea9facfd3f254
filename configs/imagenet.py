"""GhostNet 1.0x (`ghostnet_100`) on ImageNet-1k at 224x224, streamed from disk.

Command (ImageNet as a folder DATA/train/<wnid>/*.JPEG and DATA/val/<wnid>/*.JPEG, or a
prepared tfds:imagenet2012 with --config.data.source=tfds:imagenet2012
--config.data.val_split=validation; docs/data.md):
    python -m ghostnet_jax.train --config configs/imagenet.py \\
        --config.data.source=folder:DATA --workdir runs/imagenet

The recipe: the paper (Han et al., CVPR 2020, section 4.2) trains with an initial learning
rate of 0.4 for a global batch of 1,024 (8 GPUs) and otherwise follows the MobileNet-style
ImageNet setting; the rest here is that setting as the official code and timm's
reproduction use it: SGD with Nesterov momentum 0.9, weight decay 4e-5 (on kernels),
label smoothing 0.1, dropout 0.2 before the classifier, 5 warmup epochs and a cosine decay
over 300 epochs; random-resized crops of 224 and flips for training, the 256-pixel shorter
side and the centre 224 crop (crop_pct 0.875) for evaluation; ImageNet's mean/std.
Validation is a 10,000-image stratified slice of train; the official val set is the test
split. Scale learning_rate linearly with another batch_size.

Data: 1.28 M images are far beyond any device's memory, so the streamed pipeline reads
them with Grain (data.stream.workers decoding processes per host; a 16-core host: 12);
checkpoint.every_steps saves inside the 1,251-step epochs.

Expected result: not yet measured (75.7% top-1 is the paper's); needs an accelerator
(the development machines are CPU-only).
"""

from ghostnet_jax.configs import default

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # (0.485, 0.456, 0.406) x 255
IMAGENET_STD = (58.395, 57.12, 57.375)  # (0.229, 0.224, 0.225) x 255


def get_config():
    config = default.get_config()
    config.model.name = 'ghostnet_100'
    config.model.dropout_rate = 0.2
    config.data.source = 'tfds:imagenet2012'
    config.data.train_split = 'train[10000:]'
    config.data.val_split = 'train[:10000]'
    config.data.test_split = 'validation'
    config.data.image_size = 224
    config.data.pipeline = 'stream'
    config.data.mean, config.data.std = IMAGENET_MEAN, IMAGENET_STD
    config.data.stream.workers = 12
    config.data.stream.threads = 2
    config.data.stream.random_resized_crop = True
    config.data.stream.eval_crop_pct = 0.875
    # The random-resized crop already translates and scales: no pad-and-crop on device.
    config.data.augment.crop_padding = 0
    config.data.augment.flip = True
    config.batch_size = 1024
    config.eval_batch_size = 1000
    config.num_epochs = 300
    config.label_smoothing = 0.1
    config.optimizer.update(
        dict(
            name='sgd',
            learning_rate=0.4,
            momentum=0.9,
            nesterov=True,
            weight_decay=4e-5,
            schedule='warmup_cosine',
            warmup_epochs=5.0,
        )
    )
    config.log_every_steps = 100
    config.checkpoint.every_steps = 500
    # The end-of-run report holds its split's images in memory (50,000 at 224: 7.5 GB).
    config.report = False
    return config
