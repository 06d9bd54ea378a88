"""Write the fine-tuning example's data: scikit-learn's load_digits (no download) split into
an old task, the digits 0-5, to pretrain specs/digits_resnet.dl on, and a new task, the
digits 6-9 (labels 0-3), with only a few images per class to fine-tune specs/digits_finetune.dl.

    python examples/finetune/make_data.py [OUT_DIR] [PER_CLASS] [SEED]   # build/finetune 5 0

writes OUT_DIR/pre_train.npz, pre_val.npz (the old task: 200 images held out) and
few.npz (PER_CLASS images of each new class), held.npz (every other image of the new classes,
for validation); x: float32 (N, 1, 8, 8) in [0, 1], label: int64 (N,). The .npz format for
now: an image-folder loader is being added on another branch."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

OLD = range(6)  # pretraining classes
NEW = range(6, 10)  # fine-tuning classes, relabelled 0..3


def make(out: Path, per_class: int = 5, seed: int = 0, pretrain: bool = True) -> None:
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    out.mkdir(parents=True, exist_ok=True)
    if pretrain:
        old = np.random.default_rng(0).permutation(np.flatnonzero(y < len(OLD)))
        np.savez(out / "pre_train.npz", x=x[old[200:]], label=y[old[200:]])
        np.savez(out / "pre_val.npz", x=x[old[:200]], label=y[old[:200]])
    rng = np.random.default_rng(100 + seed)
    few: list[int] = []
    held: list[int] = []
    for c in NEW:
        idx = rng.permutation(np.flatnonzero(y == c))
        few += list(idx[:per_class])
        held += list(idx[per_class:])
    np.savez(out / "few.npz", x=x[few], label=y[few] - NEW[0])
    np.savez(out / "held.npz", x=x[held], label=y[held] - NEW[0])


if __name__ == "__main__":
    args = sys.argv[1:]
    out = Path(args[0] if args else "build/finetune")
    make(out, int(args[1]) if len(args) > 1 else 5, int(args[2]) if len(args) > 2 else 0)
    print(f"wrote {out}/pre_train.npz, pre_val.npz, few.npz, held.npz")
