"""Decoding and resizing of single images, and stacking them into one uint8 array."""

from __future__ import annotations

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
            'or set data.skip_corrupt_images=True to leave unreadable files out.') from e
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
                f'{image.shape} (H, W, C). Pass image_size=... to resize all images to a square size.'
            )
    return np.stack(images).astype(np.uint8, copy=False)
