"""Fine-tune pretrained GhostNet weights on your own images (a folder of any size, mixed
sizes included), with a new classifier for your classes.

Command (PHOTOS/train/<class_name>/*.jpg; the weights converted from PyTorch once, see
docs/serving.md, or any workdir of ours, e.g. runs/default):
    python -m ghostnet_jax.convert --checkpoint ghostnet_1x.pth --model ghostnet_100 \\
        --out converted/ghostnet_100
    python -m ghostnet_jax.train --config configs/finetune.py \\
        --config.init_from=converted/ghostnet_100 --config.data.source=folder:PHOTOS \\
        --workdir runs/finetune
then `python -m ghostnet_jax.predict --workdir runs/finetune photo.jpg` names your classes.

What it does: the model is the architecture init_from holds (model.name is left empty; set
it to insist on one, and a checkpoint of another is refused, exit 5). init_from loads every
pretrained layer; the classifier, whose shape follows
the number of class folders, starts fresh (the log names it). For the first epoch only
that classifier learns (optimizer.freeze_backbone_epochs), then the whole network, at a
tenth of the from-scratch learning rate. Images are random-resized crops of 224 (evaluated
on the centre crop), normalized with ImageNet's statistics as the converted weights
expect: for weights of one of our CIFAR runs add --config.data.image_size=32
--config.data.mean='()' --config.data.std='()' (the new data's own statistics) and
--config.data.stream.random_resized_crop=False.
data.pipeline='auto' keeps a small folder on the devices unless it needs the crops, which
only the streamed pipeline makes (so here: streamed).

Expected result: depends on your data; not measured on a public set yet.
"""

from ghostnet_jax.configs import imagenet


def get_config():
    # The ImageNet recipe's model, 224 crops, ImageNet normalization and evaluation crop;
    # what differs for a small labelled folder and pretrained weights:
    config = imagenet.get_config()
    config.init_from = 'converted/ghostnet_100'
    config.model.name = ''  # the architecture init_from holds (the log names it)
    config.data.source = 'folder:PHOTOS'
    config.data.train_split = 'train[:90%]'
    config.data.val_split = 'train[90%:]'
    config.data.test_split = ''
    config.data.pipeline = 'auto'
    config.data.stream.workers = 2
    config.batch_size = 64
    config.eval_batch_size = 64
    config.num_epochs = 15
    config.optimizer.update(
        dict(learning_rate=0.01, weight_decay=1e-4, warmup_epochs=1.0, freeze_backbone_epochs=1.0)
    )
    config.log_every_steps = 10
    config.checkpoint.every_steps = 0
    config.report = True  # a small validation split: its report is cheap
    return config
