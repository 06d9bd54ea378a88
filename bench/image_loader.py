"""Is the image input pipeline the bottleneck? Images per second of dslc train's loader
(images.ImageSet: Pillow decoding plus the spec's augment steps, in DataLoader workers)
against images per second of training steps on tensors already in memory, side by side in
one run, for specs/shapes_cnn.dl on a folder of drawn PNG shapes (tests/images.py).

    python bench/image_loader.py [--images 768] [--size 64] [--workers 0,1,2] [--rounds 3]

The loader side runs epochs of batches through `batches()` (decode, augment, collate),
timed after a first epoch that starts the workers;
the training side runs the same number of batches of forward, backward and Adam steps with
one torch thread. Prints a Markdown table; the loader keeps up when its images/s exceed the
training's."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from images import folder  # noqa: E402

from dslc.api import load  # noqa: E402
from dslc.runtime.train import images  # noqa: E402
from dslc.runtime.train.contract import contract  # noqa: E402


def loader_rate(c, root: str, workers: int, batch: int, epochs: int) -> list[float]:
    """Images/s of each of `epochs` epochs after a first one that starts the workers (kept
    across epochs, as in training)."""
    train, _, _ = images.datasets(c, root, None, 0.0, 0, workers)
    chunks = list(torch.randperm(len(train)).split(batch))
    rates = []
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        count = sum(len(b["label"]) for b in train.batches(chunks, epoch))
        rates.append(count / (time.perf_counter() - start))
    return rates[1:]


def train_rate(c, root: str, batch: int) -> float:
    train, _, _ = images.datasets(c, root, None, 0.0, 0, 0)
    chunks = list(torch.randperm(len(train)).split(batch))
    batches = list(train.batches(chunks, 1))  # decoded beforehand: only the steps are timed
    model, loss_fn = c.create_model().train(), c.create_loss()
    optimizer = c.create_optimizer(model)
    start = time.perf_counter()
    for b in batches:
        loss = loss_fn(model(b["x"]), b["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return sum(len(b["label"]) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=768, help="images in the folder, all classes")
    p.add_argument("--size", type=int, default=64, help="pixels per side of the PNG files")
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    c = contract(load(str(ROOT / "specs/shapes_cnn.dl")))
    batch = c.training["batch_size"]
    with tempfile.TemporaryDirectory() as tmp:
        root = str(folder(Path(tmp) / "shapes", args.images // 3, size=args.size))
        rows = [
            (
                "training steps (decoded tensors)",
                [train_rate(c, root, batch) for _ in range(args.rounds)],
            )
        ]
        for w in (int(w) for w in args.workers.split(",")):
            rates = loader_rate(c, root, w, batch, args.rounds)
            rows.append((f"loader, {w} worker{'s' if w != 1 else ''}", rates))
    print(
        f"specs/shapes_cnn.dl, {args.images} PNG images of {args.size}x{args.size}, batch {batch}"
    )
    print(f"\n| side | images/s (median of {args.rounds}) |\n|---|---:|")
    for name, rates in rows:
        print(f"| {name} | {statistics.median(rates):,.0f} |")


if __name__ == "__main__":
    main()
