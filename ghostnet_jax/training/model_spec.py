"""What a checkpoint needs besides its weights to be used on its own.

Every checkpoint the trainer writes carries a `ModelSpec` in its host JSON item (key
`model_spec`): the architecture (registry name and the overrides it was built with) and
the input pipeline it was trained with (image size, per-channel normalization, class
names), and how it was evaluated (eval_flip). `evaluate`, `ghostnet_jax.load`, `predict`
and `export` read it from there, so a workdir is enough to use a trained model: the
training data need not exist any more, and a changed training folder cannot silently
change the normalization.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import jax.numpy as jnp

SPEC_KEY = 'model_spec'


class ModelSpecError(ValueError):
    """A stored spec is missing fields or holds impossible values."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    model_name: str  # registry name (ghostnet_jax.list_models())
    num_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (H, W, C) the network was trained on
    mean: tuple[float, ...]  # per channel, in [0, 255] pixel units
    std: tuple[float, ...]
    # Square size every image was resized to when decoded (config.data.image_size), or
    # None when images were used at their stored size.
    resize: int | None = None
    # create_model overrides other than num_classes/dtype/bn_axis_name, e.g. dropout_rate.
    model_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Where the weights came from, for people reading the spec (not used to rebuild).
    data_source: str = ''
    train_split: str = ''
    # The run evaluated (results.json) each image averaged with its horizontal mirror
    # (config.eval_flip): predict and every export compute the same.
    eval_flip: bool = False
    # Trained on random-resized crops of images of any size (data.stream.random_resized_crop):
    # evaluated, and so predicted, on the shorter side resized to H / eval_crop_pct and the
    # centre H x W. None: every image resized (or used) at H x W.
    eval_crop_pct: float | None = None

    def __post_init__(self):
        if len(self.class_names) != self.num_classes:
            raise ModelSpecError(
                f'{len(self.class_names)} class names for {self.num_classes} classes.'
            )
        if len(self.image_shape) != 3 or min(self.image_shape) <= 0:
            raise ModelSpecError(f'image_shape must be (H, W, C), got {self.image_shape}.')
        channels = self.image_shape[-1]
        for name in ('mean', 'std'):
            values = getattr(self, name)
            if len(values) != channels or not all(math.isfinite(v) for v in values):
                raise ModelSpecError(f'{name} must hold {channels} finite values, got {values}.')
        if min(self.std) <= 0:
            raise ModelSpecError(f'std must be positive, got {self.std}.')

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d['class_names'] = list(self.class_names)
        d['image_shape'] = list(self.image_shape)
        d['mean'], d['std'] = list(self.mean), list(self.std)
        d['model_overrides'] = dict(self.model_overrides)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> 'ModelSpec':
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(d))
        if missing:
            raise ModelSpecError(f'model spec lacks {missing}; it has {sorted(d)}.')
        kwargs = {k: v for k, v in d.items() if k in fields}
        kwargs['class_names'] = tuple(kwargs['class_names'])
        kwargs['image_shape'] = tuple(int(x) for x in kwargs['image_shape'])
        kwargs['mean'] = tuple(float(x) for x in kwargs['mean'])
        kwargs['std'] = tuple(float(x) for x in kwargs['std'])
        kwargs['model_overrides'] = dict(kwargs.get('model_overrides') or {})
        kwargs['eval_flip'] = bool(kwargs.get('eval_flip', False))
        crop = kwargs.get('eval_crop_pct')
        kwargs['eval_crop_pct'] = float(crop) if crop else None
        return cls(**kwargs)

    def build_model(self, dtype: Any = jnp.float32, **overrides: Any):
        """The Linen module these weights belong to (float32 compute unless asked)."""
        from ghostnet_jax.models import create_model

        kwargs = {
            **self.model_overrides,
            'num_classes': self.num_classes,
            'dtype': dtype,
            **overrides,
        }
        return create_model(self.model_name, **kwargs)

    def differences(self, other: 'ModelSpec') -> list[str]:
        """Fields (with both values) in which `other` differs: what a resume must refuse."""
        out = []
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name in ('mean', 'std'):
                same = all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-4) for x, y in zip(a, b))
            else:
                same = a == b
            if not same:
                out.append(f'{f.name}: {a!r} -> {b!r}')
        return out


def spec_from_training(
    config: Any,
    class_names: Sequence[str],
    image_shape: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
) -> ModelSpec:
    """The spec of a model trained per `config` on data with these properties."""
    return ModelSpec(
        model_name=config.model.name,
        num_classes=len(class_names),
        class_names=tuple(class_names),
        image_shape=tuple(int(x) for x in image_shape),
        mean=tuple(float(x) for x in mean),
        std=tuple(float(x) for x in std),
        resize=config.data.image_size,
        model_overrides={
            'dropout_rate': float(config.model.dropout_rate),
            'conv_impl': config.model.conv_impl,
        },
        data_source=config.data.source,
        train_split=config.data.train_split,
        eval_flip=bool(config.get('eval_flip', False)),
        eval_crop_pct=eval_crop_pct(config.data),
    )


def eval_crop_pct(data_config: Any) -> float | None:
    """The centre-crop share of a run that trains on random-resized crops, else None."""
    stream = data_config.get('stream')
    if stream is not None and stream.get('random_resized_crop'):
        return float(stream.eval_crop_pct)
    return None
