"""Decoding and resizing of single images, and stacking them into one uint8 array; the
host-side crops of the streamed pipeline (and of serving) for images of any size."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ghostnet_jax.data.errors import CorruptImageError, MixedImageSizeError


def resize(image: np.ndarray, image_size: int) -> np.ndarray:
    """Resizes an (H, W, C) uint8 image to (image_size, image_size, C) with PIL bilinear."""
    if image.shape[0] == image_size and image.shape[1] == image_size:
        return image
    squeeze = image.shape[-1] == 1
    pil = Image.fromarray(image[..., 0] if squeeze else image)
    out = np.asarray(pil.resize((image_size, image_size), Image.Resampling.BILINEAR))
    return out[..., None] if squeeze else out


def decode_file(path: str, image_size: int | None = None) -> np.ndarray:
    """Decodes a JPEG/PNG file to (H, W, 3) uint8 RGB, optionally resized.

    Everything is converted to RGB (grayscale, palette and RGBA included) so that
    one folder dataset always has one channel count.
    """
    try:
        with Image.open(path) as img:
            img.load()  # Forces the full decode: truncated files fail here, not later.
            array = np.asarray(img.convert('RGB'), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CorruptImageError(
            f'Cannot decode image {path}: {type(e).__name__}: {e}. Replace or remove the file, '
            'or set data.skip_corrupt_images=True to leave unreadable files out.'
        ) from e
    return resize(array, image_size) if image_size else array


def stack(images: Sequence[np.ndarray], names: Sequence[str], context: str) -> np.ndarray:
    """Stacks same-sized images; a size mismatch is a MixedImageSizeError naming two files."""
    if not images:
        return np.zeros((0, 0, 0, 3), np.uint8)
    first = images[0].shape
    for image, name in zip(images, names):
        if image.shape != first:
            raise MixedImageSizeError(
                f'{context}: images have different sizes, e.g. {names[0]} is {first} but {name} is '
                f'{image.shape} (H, W, C). Pass image_size=... to resize all images to a square '
                'size.'
            )
    return np.stack(images).astype(np.uint8, copy=False)


def resize_shorter(pil: Image.Image, size: int, resample) -> Image.Image:
    """torchvision's Resize(int): the shorter side becomes ``size``, the longer one keeps the
    aspect ratio, truncated (int(size * long / short)), as timm's eval transform does."""
    w, h = pil.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return pil if new == (w, h) else pil.resize(new, resample)


def centre_crop(pil: Image.Image, h: int, w: int) -> Image.Image:
    """torchvision's center_crop (offsets round((size - crop) / 2)); an image smaller than
    the crop is first enlarged to cover it."""
    iw, ih = pil.size
    if iw < w or ih < h:
        pil = pil.resize((max(iw, w), max(ih, h)), Image.Resampling.BICUBIC)
        iw, ih = pil.size
    top, left = int(round((ih - h) / 2.0)), int(round((iw - w) / 2.0))
    return pil.crop((left, top, left + w, top + h))


def resize_and_centre_crop(image: np.ndarray, size: int, crop_pct: float) -> np.ndarray:
    """Evaluation view of an image of any size: shorter side to floor(size / crop_pct)
    (bilinear), centre crop size x size; what ``predict`` does for such a run too."""
    pil = resize_shorter(
        Image.fromarray(image), int(math.floor(size / crop_pct)), Image.Resampling.BILINEAR
    )
    return np.asarray(centre_crop(pil, size, size), dtype=np.uint8)


def random_resized_crop(
    image: np.ndarray,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Inception-style crop (torchvision's RandomResizedCrop): a box of a random share of
    the area (``scale``) and log-uniform aspect ratio (``ratio``), tried 10 times, else the
    centre box of the clamped ratio; resized to size x size (bilinear)."""
    h, w = image.shape[:2]
    area = h * w
    box = None
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            box = (left, top, left + cw, top + ch)
            break
    if box is None:
        in_ratio = w / h
        if in_ratio < ratio[0]:
            cw, ch = w, int(round(w / ratio[0]))
        elif in_ratio > ratio[1]:
            cw, ch = int(round(h * ratio[1])), h
        else:
            cw, ch = w, h
        top, left = (h - ch) // 2, (w - cw) // 2
        box = (left, top, left + cw, top + ch)
    pil = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(pil, dtype=np.uint8)
