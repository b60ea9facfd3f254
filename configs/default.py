"""Default recipe: GhostNet-CIFAR 1.0x on CIFAR-10, SGD + warmup-cosine, crop/flip.

Command (GPU/TPU; on CPU see configs/cpu_hour.py):
    python -m ghostnet_jax.train
    python -m ghostnet_jax.train --config configs/default.py --workdir runs/default

Data: train = train[:90%] (45,000), validation = train[90%:] (5,000) drives early stopping,
plateau, sweeps and the best checkpoint; test (10,000) is touched only for results.json.

Expected result: not yet measured on an accelerator (the development machines are CPU-only);
the CPU-sized variant's measured numbers are in configs/cpu_hour.py.
"""
import ml_collections
from ml_collections import config_dict

from ghostnet_jax.training.callbacks import default_callbacks_config
from ghostnet_jax.training.checkpoints import default_checkpoint_config
from ghostnet_jax.training.optim import default_optimizer_config


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict(dict(
        name='ghostnet_cifar_100',
        dropout_rate=0.2,
        conv_impl='auto',          # auto: fast shifted formulation on CPU, native elsewhere
    ))

    config.data = ml_collections.ConfigDict(dict(
        source='tfds:cifar10',     # or folder:PATH (PATH/<split>/<class>/*.jpg)
        data_dir=config_dict.placeholder(str),
        cache_dir=config_dict.placeholder(str),
        train_split='train[:90%]',
        val_split='train[90%:]',
        test_split='test',         # '' to skip the final test evaluation
        image_size=config_dict.placeholder(int),
        # folder sources: leave out (and log by name, with a count) files that cannot be
        # decoded, instead of stopping with an error naming the first one.
        skip_corrupt_images=False,
        # 'device': every split held on the devices (fastest where it fits: CIFAR-10);
        # 'stream': batches read from disk with Grain while training (data larger than
        # device memory, images of any size); 'auto': 'device' when the splits fit
        # data.stream.device_memory_share of one device's memory (docs/data.md).
        pipeline='device',
        # Normalization in pixel units (0..255), per channel; None: the training split's
        # own statistics. Fine-tuning keeps the pretrained weights' (configs/finetune.py).
        mean=config_dict.placeholder(tuple),
        std=config_dict.placeholder(tuple),
        stream=ml_collections.ConfigDict(dict(
            workers=2,             # decoding processes (0: threads of the training process)
            threads=2,             # batches each worker reads at once
            prefetch=2,            # batches placed on the devices ahead of the step
            device_memory_share=0.25,  # data.pipeline='auto': the splits' share that fits
            # Train on Inception-style random-resized crops of data.image_size from images
            # of any size; evaluate on the centre crop after resizing to size / eval_crop_pct.
            random_resized_crop=False,
            eval_crop_pct=0.875,
            stats_examples=50_000,  # mean/std (when not given) from at most this many images
        )),
        # On-device training augmentation, in this order (docs/training.md):
        augment=ml_collections.ConfigDict(dict(
            crop_padding=4,        # pad by 4 and crop back at a random offset (0 = off)
            padding_mode='reflect',  # or 'zero'
            flip=True,             # random horizontal flip
            trivial_augment=False,  # TrivialAugment-Wide: one random op per image
            cutout=0,              # side of a square set to the dataset mean (0 = off)
            random_erasing=0.0,    # probability of erasing a random rectangle per image
            mixup_alpha=0.0,       # mixup, lambda ~ Beta(a, a) per batch (0 = off)
            cutmix_alpha=0.0,      # cutmix, box area ~ Beta(a, a) per batch (0 = off)
            mix_prob=1.0,          # probability a batch is mixed when an alpha is > 0
        )),
        # Train the first epochs_fraction of the epochs on batches downscaled to size x
        # size (0 = off): faster epochs, so a time budget fits more (training/low_res.py).
        low_res=ml_collections.ConfigDict(dict(size=0, epochs_fraction=0.5)),
    ))

    config.batch_size = 128        # global, over all devices
    config.eval_batch_size = 500
    config.num_epochs = 200
    config.label_smoothing = 0.0
    config.ema_decay = 0.0         # > 0 evaluates an exponential moving average of params
    config.eval_flip = False       # evaluate on the mean softmax of each image and its mirror
    config.dtype = 'auto'          # auto: bfloat16 on TPU/GPU, float32 on CPU
    config.parallel = 'jit'        # or 'pmap'
    config.init_from = config_dict.placeholder(str)   # checkpoint / converted weights dir
    config.max_steps = config_dict.placeholder(int)   # stop early (smoke tests, benchmarks)
    # Minutes of wall time for the whole run: num_epochs is then fitted from the measured
    # step and validation time (docs/training.md); None or 0: train num_epochs.
    config.time_budget_minutes = config_dict.placeholder(float)
    config.log_every_steps = 50
    config.report = True           # report/report.md (curves, diagnosis, confusion) at the end

    config.optimizer = default_optimizer_config()
    config.optimizer.update(dict(name='sgd', learning_rate=0.1, momentum=0.9, nesterov=True,
                                 weight_decay=5e-4, schedule='warmup_cosine',
                                 warmup_epochs=5.0))
    config.callbacks = default_callbacks_config()
    config.checkpoint = default_checkpoint_config()
    config.distributed = ml_collections.ConfigDict(dict(
        enabled='auto',            # auto: on Cloud TPU VMs; True for other multi-host runs
        coordinator_address='', num_processes=1, process_id=0))
    return config
