"""Write the fine-tuning example's data: scikit-learn's load_digits (no download) split into
an old task, the digits 0-5, to pretrain specs/digits_resnet.dl on, and a new task, the
digits 6-9 (labels 0-3), with only a few images per class to fine-tune specs/digits_finetune.dl.

    python examples/finetune/make_data.py [OUT_DIR] [PER_CLASS] [SEED]   # build/finetune 5 0

writes image folders, one subfolder per class holding 8x8 grayscale PNGs (`dslc train --data
DIR` reads them, and takes the labels from the sorted folder names): OUT_DIR/pre_train and
pre_val (the old task, 200 images held out), few (PER_CLASS images of each new class) and held
(every other image of the new classes, for validation)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

OLD = range(6)  # pretraining classes
NEW = range(6, 10)  # fine-tuning classes, relabelled 0..3


def make(out: Path, per_class: int = 5, seed: int = 0, pretrain: bool = True) -> None:
    d = load_digits()
    x = np.rint(d.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    y = d.target.astype(np.int64)
    out.mkdir(parents=True, exist_ok=True)
    if pretrain:
        old = np.random.default_rng(0).permutation(np.flatnonzero(y < len(OLD)))
        folder(out / "pre_train", x, y, old[200:])
        folder(out / "pre_val", x, y, old[:200])
    rng = np.random.default_rng(100 + seed)
    few: list[int] = []
    held: list[int] = []
    for c in NEW:
        idx = rng.permutation(np.flatnonzero(y == c))
        few += list(idx[:per_class])
        held += list(idx[per_class:])
    folder(out / "few", x, y, few)
    folder(out / "held", x, y, held)


def folder(root: Path, x: np.ndarray, y: np.ndarray, index) -> None:
    """The images `index` as root/<digit>/<n>.png."""
    for i in index:
        (root / str(y[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i], mode="L").save(root / str(y[i]) / f"{i:04d}.png")


if __name__ == "__main__":
    args = sys.argv[1:]
    out = Path(args[0] if args else "build/finetune")
    make(out, int(args[1]) if len(args) > 1 else 5, int(args[2]) if len(args) > 2 else 0)
    print(f"wrote the image folders {out}/pre_train, pre_val, few and held")
