"""What happens to an image before the network sees it, in two halves.

Host half (`Preprocessing.load_image` / `prepare`): decode a file, convert it to the
model's channel count and bring it to the model's (H, W) exactly as the weights expect:

* a training run whose data was resized (`ModelSpec.resize`) gets the same square PIL
  bilinear resize `ghostnet_jax.data` applied when it decoded the training images;
* a training run that used images at their stored size (CIFAR-10) gets images of that size
  through unchanged; other sizes are resized to it (bilinear): the network never saw
  anything else, so this is the closest input there is;
* converted ImageNet weights get timm's evaluation transform for GhostNet: shorter side
  to 256 (bicubic, crop_pct 0.875), centre crop 224.

Device half (`to_model_input`, traced into `predict` and into every export): uint8
(or float in [0, 1]) -> float32 in [0, 255] units -> (x - mean) / std per channel, the
normalization the network was trained with. Keeping it in the graph is what lets an
exported model take raw uint8 pixels and serve without this package.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from ghostnet_jax.data.errors import CorruptImageError
from ghostnet_jax.data.images import centre_crop, resize_shorter
from ghostnet_jax.training.model_spec import ModelSpec

# In [0, 1] units, as timm (and torchvision) state them; stored here in [0, 255] units.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# timm's pretrained config for GhostNet: 224 input, crop_pct 0.875 (-> resize 256), bicubic.
IMAGENET_INPUT_SIZE = 224
IMAGENET_CROP_PCT = 0.875

_INTERPOLATIONS = {'bilinear': Image.Resampling.BILINEAR, 'bicubic': Image.Resampling.BICUBIC}


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    image_shape: tuple[int, int, int]  # (H, W, C) the network takes
    mean: tuple[float, ...]  # per channel, [0, 255] units
    std: tuple[float, ...]
    # 'resize': every image resized to (H, W) (training runs);
    # 'resize_shorter_crop': shorter side to `resize_shorter`, centre crop (H, W) (ImageNet).
    mode: str = 'resize'
    resize_shorter: int | None = None
    interpolation: str = 'bilinear'

    def __post_init__(self):
        if self.mode not in ('resize', 'resize_shorter_crop'):
            raise ValueError(f'unknown preprocessing mode {self.mode!r}')
        if self.mode == 'resize_shorter_crop' and not self.resize_shorter:
            raise ValueError("mode 'resize_shorter_crop' needs resize_shorter")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f'interpolation must be one of {sorted(_INTERPOLATIONS)}, '
                f'got {self.interpolation!r}'
            )

    # ----------------------------------------------------------------- construction
    @classmethod
    def for_run(cls, spec: ModelSpec) -> 'Preprocessing':
        """A training run's: its decode-time square resize, if any, is a resize to
        image_shape (which then has that size), so one rule covers both cases."""
        if spec.eval_crop_pct:  # trained on random-resized crops: evaluated on the centre
            return cls(
                image_shape=spec.image_shape,
                mean=spec.mean,
                std=spec.std,
                mode='resize_shorter_crop',
                interpolation='bilinear',
                resize_shorter=int(math.floor(spec.image_shape[0] / spec.eval_crop_pct)),
            )
        return cls(
            image_shape=spec.image_shape,
            mean=spec.mean,
            std=spec.std,
            mode='resize',
            interpolation='bilinear',
        )

    @classmethod
    def imagenet(
        cls, input_size: int = IMAGENET_INPUT_SIZE, crop_pct: float = IMAGENET_CROP_PCT
    ) -> 'Preprocessing':
        return cls(
            image_shape=(input_size, input_size, 3),
            mean=tuple(255.0 * m for m in IMAGENET_MEAN),
            std=tuple(255.0 * s for s in IMAGENET_STD),
            mode='resize_shorter_crop',
            resize_shorter=int(math.floor(input_size / crop_pct)),
            interpolation='bicubic',
        )

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d['image_shape'], d['mean'], d['std'] = (
            list(self.image_shape),
            list(self.mean),
            list(self.std),
        )
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> 'Preprocessing':
        return cls(
            image_shape=tuple(int(x) for x in d['image_shape']),
            mean=tuple(float(x) for x in d['mean']),
            std=tuple(float(x) for x in d['std']),
            mode=d.get('mode', 'resize'),
            resize_shorter=d.get('resize_shorter'),
            interpolation=d.get('interpolation', 'bilinear'),
        )

    def describe(self) -> str:
        h, w, c = self.image_shape
        if self.mode == 'resize_shorter_crop':
            host = (
                f'shorter side to {self.resize_shorter} ({self.interpolation}), centre crop {h}x{w}'
            )
        else:
            host = f'resize to {h}x{w} ({self.interpolation}) unless already that size'
        mean = ', '.join(f'{m:.3f}' for m in self.mean)
        std = ', '.join(f'{s:.3f}' for s in self.std)
        return (
            f'{host}; {c}-channel uint8 NHWC; in the graph: (x - [{mean}]) / [{std}] (pixel units)'
        )

    # -------------------------------------------------------------------- host half
    def prepare(self, image: np.ndarray | Image.Image) -> np.ndarray:
        """One decoded image (PIL or HWC/HW uint8 array) -> (H, W, C) uint8 model input."""
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        pil = pil.convert('L' if self.image_shape[-1] == 1 else 'RGB')
        h, w, _ = self.image_shape
        resample = _INTERPOLATIONS[self.interpolation]
        if self.mode == 'resize_shorter_crop':
            pil = resize_shorter(pil, self.resize_shorter, resample)
            pil = centre_crop(pil, h, w)
        elif pil.size != (w, h):
            pil = pil.resize((w, h), resample)
        out = np.asarray(pil, dtype=np.uint8)
        return out[..., None] if out.ndim == 2 else out

    def load_image(self, path: str | os.PathLike) -> np.ndarray:
        """Decodes and prepares one file; an unreadable file raises CorruptImageError
        (a DataError) naming it."""
        try:
            with Image.open(path) as img:
                img.load()  # full decode now: truncated files fail here, not later
                return self.prepare(img)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise CorruptImageError(f'Cannot read image {path}: {type(e).__name__}: {e}') from e

    # ------------------------------------------------------------------ device half
    def to_model_input(self, images: jax.Array) -> jax.Array:
        """uint8 [0, 255] or float [0, 1] NHWC -> normalized float32 (traced, in the graph)."""
        x = images.astype(jnp.float32)
        if not jnp.issubdtype(images.dtype, jnp.integer):
            x = x * 255.0  # floats come in [0, 1]; mean/std are in pixel units
        mean = jnp.asarray(self.mean, jnp.float32)
        std = jnp.asarray(self.std, jnp.float32)
        return (x - mean) / std
