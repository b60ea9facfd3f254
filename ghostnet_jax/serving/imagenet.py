"""ImageNet-1k metadata for converted timm/official weights: class names and a ModelSpec.

The 1000 names ship with the package (imagenet_classes.tsv, taken from timm's class
lists), so nothing is fetched at run time.
"""

from __future__ import annotations

import functools
from importlib import resources

from ghostnet_jax.serving.preprocessing import Preprocessing
from ghostnet_jax.training.model_spec import ModelSpec

IMAGENET_NUM_CLASSES = 1000
CLASSES_FILE = 'imagenet_classes.tsv'


@functools.cache
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """(WordNet id, names) of the 1000 classes in label order."""
    text = resources.files('ghostnet_jax.serving').joinpath(CLASSES_FILE).read_text('utf-8')
    rows = [
        line.split('\t', 1)
        for line in text.splitlines()
        if line.strip() and not line.startswith('#')
    ]
    if len(rows) != IMAGENET_NUM_CLASSES:
        raise RuntimeError(
            f'{CLASSES_FILE} holds {len(rows)} classes, expected 1000: the package data is damaged.'
        )
    return tuple((wnid, names) for wnid, names in rows)


def imagenet_class_names() -> tuple[str, ...]:
    """The WordNet lemmas ('tench, Tinca tinca', ...), as timm reports them. Not unique
    per se ('crane' is a bird and a machine), so keep the index alongside."""
    return tuple(names for _, names in imagenet_classes())


def converted_spec(
    model_name: str, num_classes: int, is_cifar: bool, source: str
) -> tuple[ModelSpec, Preprocessing, bool]:
    """(spec, preprocessing, guessed) for PyTorch weights of `model_name`.

    ImageNet models with a 1000-way head get ImageNet's class names and timm's evaluation
    transform. Any other head has no known classes or normalization: class_0..., ImageNet
    normalization and the model's native input size are a guess, reported as such.
    """
    imagenet = not is_cifar and num_classes == IMAGENET_NUM_CLASSES
    size = 32 if is_cifar else None
    prep = (
        Preprocessing.imagenet()
        if not is_cifar
        else Preprocessing(
            image_shape=(size, size, 3),
            mean=Preprocessing.imagenet().mean,
            std=Preprocessing.imagenet().std,
            mode='resize',
            interpolation='bilinear',
        )
    )
    names = imagenet_class_names() if imagenet else tuple(f'class_{i}' for i in range(num_classes))
    spec = ModelSpec(
        model_name=model_name,
        num_classes=num_classes,
        class_names=names,
        image_shape=prep.image_shape,
        mean=prep.mean,
        std=prep.std,
        resize=None,
        model_overrides={},
        data_source=f'imagenet-1k ({source})' if imagenet else source,
    )
    return spec, prep, not imagenet
