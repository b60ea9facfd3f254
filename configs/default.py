"""Default recipe: GhostNet-CIFAR 1.0x on CIFAR-10, SGD + warmup-cosine, crop/flip.

Command (GPU/TPU; on CPU see configs/cpu_hour.py):
    python -m ghostnet_jax.train
    python -m ghostnet_jax.train --config configs/default.py --workdir runs/default

Data: train = train[:90%] (45,000), validation = train[90%:] (5,000) drives early stopping,
plateau, sweeps and the best checkpoint; test (10,000) is touched only for results.json.

Expected result: not yet measured on an accelerator (the development machines are CPU-only);
the CPU-sized variant's measured numbers are in configs/cpu_hour.py.

Every field the trainer reads is here, with its default; other configs start from this one
and change what differs. A field set on the command line (--config.FIELD=VALUE) must exist
here (a misspelled one fails naming the valid ones).
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # initial weights, batch order, augmentation, dropout

    config.model = ml_collections.ConfigDict()
    config.model.name = 'ghostnet_cifar_100'  # a registered model (docs/serving.md#models)
    config.model.dropout_rate = 0.2  # before the classifier
    config.model.conv_impl = 'auto'  # auto: the fast shifted formulation on CPU, native elsewhere

    config.data = ml_collections.ConfigDict()
    config.data.source = 'tfds:cifar10'  # or folder:PATH (PATH/<split>/<class>/*.jpg)
    config.data.data_dir = config_dict.placeholder(str)  # TFDS's folder (None: its default)
    config.data.cache_dir = config_dict.placeholder(str)  # decoded splits (None: ~/.cache)
    config.data.train_split = 'train[:90%]'  # TFDS slicing, for folders too
    config.data.val_split = 'train[90%:]'  # drives early stopping, plateau, best checkpoint
    config.data.test_split = 'test'  # '' to skip the final test evaluation
    config.data.image_size = config_dict.placeholder(int)  # resize to this side (None: as stored)
    # Folder sources: leave out (and log by name, with a count) files that cannot be decoded,
    # instead of stopping with an error naming the first one.
    config.data.skip_corrupt_images = False
    # 'device': every split held on the devices (fastest where it fits: CIFAR-10); 'stream':
    # batches read from disk with Grain while training (data larger than device memory,
    # images of any size); 'auto': 'device' when the splits fit data.stream.device_memory_share
    # of one device's memory (docs/data.md).
    config.data.pipeline = 'device'
    # Normalization in pixel units (0..255), per channel; None: the training split's own
    # statistics. Fine-tuning keeps the pretrained weights' (configs/finetune.py).
    config.data.mean = config_dict.placeholder(tuple)
    config.data.std = config_dict.placeholder(tuple)

    config.data.stream = ml_collections.ConfigDict()
    config.data.stream.workers = 2  # decoding processes (0: threads of the training process)
    config.data.stream.threads = 2  # batches each worker reads at once
    config.data.stream.prefetch = 2  # batches placed on the devices ahead of the step
    config.data.stream.device_memory_share = 0.25  # pipeline='auto': the splits' share that fits
    # Inception-style random-resized crops of data.image_size from images of any size;
    # evaluation on the centre crop after resizing to size / eval_crop_pct.
    config.data.stream.random_resized_crop = False
    config.data.stream.eval_crop_pct = 0.875
    config.data.stream.stats_examples = 50_000  # mean/std (when not given) from this many images

    # On-device training augmentation, in this order (docs/training.md).
    config.data.augment = ml_collections.ConfigDict()
    config.data.augment.crop_padding = 4  # pad by 4 and crop back at a random offset (0 = off)
    config.data.augment.padding_mode = 'reflect'  # or 'zero'
    config.data.augment.flip = True  # random horizontal flip
    config.data.augment.trivial_augment = False  # TrivialAugment-Wide: one random op per image
    config.data.augment.cutout = 0  # side of a square set to the dataset mean (0 = off)
    config.data.augment.random_erasing = 0.0  # probability of erasing a random rectangle
    config.data.augment.mixup_alpha = 0.0  # mixup, lambda ~ Beta(a, a) per batch (0 = off)
    config.data.augment.cutmix_alpha = 0.0  # cutmix, box area ~ Beta(a, a) per batch (0 = off)
    config.data.augment.mix_prob = 1.0  # probability a batch is mixed when an alpha is > 0

    # Low-resolution first epochs (training/low_res.py): faster epochs, so a time budget
    # fits more.
    config.data.low_res = ml_collections.ConfigDict()
    config.data.low_res.size = 0  # train on batches downscaled to size x size (0 = off)
    config.data.low_res.epochs_fraction = 0.5  # for this share of the first epochs

    config.batch_size = 128  # global, over all devices
    config.eval_batch_size = 500  # global; bounds evaluation's memory
    config.num_epochs = 200
    config.label_smoothing = 0.0  # 0.1: the target's 1 becomes 0.9, spread over the classes
    config.ema_decay = 0.0  # > 0 evaluates an exponential moving average of the params
    config.eval_flip = False  # evaluate on the mean softmax of each image and its mirror
    config.dtype = 'auto'  # auto: bfloat16 on TPU/GPU, float32 on CPU
    config.parallel = 'jit'  # or 'pmap'
    config.init_from = config_dict.placeholder(str)  # a run, checkpoint or converted weights
    config.max_steps = config_dict.placeholder(int)  # stop early (smoke tests, benchmarks)
    # Minutes of wall time for the whole run: the number of epochs is then fitted from the
    # measured step and validation time (docs/training.md); None or 0: train num_epochs.
    config.time_budget_minutes = config_dict.placeholder(float)
    config.log_every_steps = 50  # metrics fetched, logged and checked every N steps
    config.report = True  # report/report.md (curves, diagnosis, confusion) at the end

    # training/optim.py says what each does.
    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = 'sgd'  # sgd | adam | adamw
    config.optimizer.learning_rate = 0.1  # the peak, reached at the end of warmup
    config.optimizer.schedule = 'warmup_cosine'  # or warmup_linear | constant | piecewise
    config.optimizer.warmup_epochs = 5.0  # linear warmup from 0 (may be fractional)
    config.optimizer.min_lr = 0.0  # where warmup_cosine / warmup_linear end
    config.optimizer.boundaries_epochs = ()  # piecewise: lr *= decay_factor from each epoch
    config.optimizer.decay_factor = 0.1
    config.optimizer.momentum = 0.9  # sgd
    config.optimizer.nesterov = True  # sgd
    config.optimizer.b1 = 0.9  # adam / adamw
    config.optimizer.b2 = 0.999  # adam / adamw
    config.optimizer.eps = 1e-8  # adam / adamw
    config.optimizer.weight_decay = 5e-4  # adamw: decoupled; sgd / adam: L2 in the gradient
    config.optimizer.grad_clip_norm = 0.0  # clip the gradient to this global norm (0 = off)
    config.optimizer.freeze_backbone_epochs = 0.0  # fine-tuning: the classifier alone first

    # training/callbacks.py: Keras's EarlyStopping and ReduceLROnPlateau, decided on the host.
    config.callbacks = ml_collections.ConfigDict()
    config.callbacks.early_stopping = ml_collections.ConfigDict()
    config.callbacks.early_stopping.enabled = False
    config.callbacks.early_stopping.monitor = 'val_accuracy'  # or val_loss, train_accuracy, ...
    config.callbacks.early_stopping.mode = 'max'  # max | min
    config.callbacks.early_stopping.patience = 5  # epochs without improvement before it stops
    config.callbacks.early_stopping.min_delta = 0.0  # what counts as an improvement
    config.callbacks.early_stopping.restore_best = True  # evaluate the best epoch at the end
    config.callbacks.reduce_lr_on_plateau = ml_collections.ConfigDict()
    config.callbacks.reduce_lr_on_plateau.enabled = False
    config.callbacks.reduce_lr_on_plateau.monitor = 'val_loss'
    config.callbacks.reduce_lr_on_plateau.mode = 'auto'  # auto: min for losses, max otherwise
    config.callbacks.reduce_lr_on_plateau.factor = 0.5  # the lr scale is multiplied by it
    config.callbacks.reduce_lr_on_plateau.patience = 3
    config.callbacks.reduce_lr_on_plateau.cooldown = 0  # epochs after a cut before it watches
    config.callbacks.reduce_lr_on_plateau.min_scale = 0.0  # the scale never goes below this
    config.callbacks.reduce_lr_on_plateau.min_lr = 0.0  # nor the learning rate below this
    config.callbacks.reduce_lr_on_plateau.min_delta = 1e-4

    # training/checkpoints.py: <workdir>/checkpoints/<step>/, the latest k and the best kept.
    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_epochs = 1  # save after every N-th epoch (and after the last)
    config.checkpoint.every_steps = 0  # also save inside epochs, every N steps (0 = off)
    config.checkpoint.max_to_keep = 3  # the latest k kept ...
    config.checkpoint.keep_best = 1  # ... and the best ones besides (0 = off)
    config.checkpoint.best_metric = 'val_accuracy'  # what ranks "best" (unless early stopping's)
    config.checkpoint.best_mode = 'max'
    config.checkpoint.async_save = True  # written in the background while training goes on
    # A background save slower than this fails, as a warning (0: no limit in one process,
    # orbax's 20 minutes in several).
    config.checkpoint.save_timeout_s = 0

    # Multi-process runs (docs/cloud_tpu.md).
    config.distributed = ml_collections.ConfigDict()
    config.distributed.enabled = 'auto'  # auto: on Cloud TPU VMs; True for other multi-host runs
    config.distributed.coordinator_address = ''  # host:port of process 0
    config.distributed.num_processes = 1
    config.distributed.process_id = 0
    return config
