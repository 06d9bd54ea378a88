"""Image folders the tests draw themselves: circles, squares and triangles of random colour,
size and place on a random background, written as PNG (and JPEG) files, one folder per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("circle", "square", "triangle")


def draw(kind: str, rng: np.random.Generator, size: int = 32):
    from PIL import Image, ImageDraw

    background = tuple(int(v) for v in rng.integers(0, 90, 3))
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    colour = tuple(int(v) for v in rng.integers(150, 256, 3))
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, 2))
    if kind == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif kind == "square":
        pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return image


def folder(root: Path, per_class: int, seed: int = 0, size: int = 32, jpeg: bool = False) -> Path:
    """root/<class>/<i>.png for each class; every fourth image a JPEG when `jpeg`."""
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = draw(kind, rng, size)
            suffix = ".jpg" if jpeg and i % 4 == 3 else ".png"
            image.save(root / kind / f"{i:03d}{suffix}")
    return root
