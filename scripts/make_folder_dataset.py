"""Writes a small synthetic image folder, PATH/train/<class>/*.jpg, of mixed image sizes:
each class a colour plus noise (learnable in a few steps). For trying the streamed
pipeline and configs/finetune.py without a real dataset (docs/training.md):

    python scripts/make_folder_dataset.py PATH [--classes cat,dog] [--per-class 40]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = ((48, 48), (64, 40), (36, 56), (80, 80))  # (H, W), mixed on purpose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('path')
    parser.add_argument('--classes', default='cat,dog')
    parser.add_argument('--per-class', type=int, default=40)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    names = args.classes.split(',')
    for c, name in enumerate(names):
        folder = Path(args.path) / 'train' / name
        folder.mkdir(parents=True, exist_ok=True)
        colour = 40 + 175 * np.eye(3)[c % 3] + 30 * (c // 3)
        for i in range(args.per_class):
            h, w = SIZES[i % len(SIZES)]
            image = np.clip(colour + rng.normal(0, 50, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / f'{i:04d}.jpg', quality=90)
    print(f'wrote {len(names)} x {args.per_class} images to {args.path}/train')


if __name__ == '__main__':
    main()
