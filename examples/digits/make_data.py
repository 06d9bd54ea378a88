"""Write the digits data set for specs/digits_cnn.dl: scikit-learn's load_digits (1,797 8x8
images, bundled with scikit-learn, no download) split 80/20 with a fixed seed.

    python examples/digits/make_data.py [OUT_DIR]        # default build/digits

writes OUT_DIR/train.npz and OUT_DIR/val.npz, each holding x: float32 (N, 1, 8, 8), pixels
scaled from 0..16 to [0, 1], and label: int64 (N,), the digit; and for specs/vae.dl, which sees
each image as 64 values, OUT_DIR/vae_train.npz and vae_val.npz holding image: float32 (N, 64)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

SEED = 0
VAL_FRACTION = 0.2


def make(out: Path) -> tuple[int, int]:
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # (1797, 1, 8, 8)
    label = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(label))
    held = int(len(label) * VAL_FRACTION)
    val, train = order[:held], order[held:]
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "train.npz", x=x[train], label=label[train])
    np.savez(out / "val.npz", x=x[val], label=label[val])
    flat = x.reshape(len(x), 64)
    np.savez(out / "vae_train.npz", image=flat[train])
    np.savez(out / "vae_val.npz", image=flat[val])
    return len(train), len(val)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "build/digits")
    n_train, n_val = make(out)
    print(f"wrote {out}/train.npz ({n_train} examples), {out}/val.npz ({n_val}) and vae_*.npz")
