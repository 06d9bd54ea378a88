"""What a run shows and leaves behind: a tqdm bar per epoch on a terminal (one summary line per
epoch otherwise), runs/NAME/metrics.jsonl (one JSON object per epoch), and curves.png."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from dslc.runtime.train.checkpoint import atomic_write

METRICS = "metrics.jsonl"
PLOT = "curves.png"
FIELDS = ("epoch", "step", "train_loss", "val_loss", "val_accuracy", "lr", "seconds")


class Progress:
    """One epoch's progress: a live bar (loss, examples/s) when stderr is a terminal."""

    def __init__(self, epoch: int, epochs: int, steps: int, done: int, enabled: bool) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            # tqdm shows nothing on a pty that reports a 0 x 0 size; shutil falls back to 80 x 24
            size = shutil.get_terminal_size()
            self.bar = tqdm(
                total=steps,
                initial=done,
                desc=f"epoch {epoch + 1}/{epochs}",
                unit="step",
                file=sys.stderr,
                ncols=size.columns,
                nrows=size.lines,
                leave=False,
            )

    def update(self, loss: float, examples_per_second: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", ex_s=f"{examples_per_second:,.0f}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def summary(row: dict[str, Any], epochs: int, examples_per_second: float) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"train_loss {row['train_loss']:.4f}"]
    for key in ("val_loss", "val_accuracy"):
        if row.get(key) is not None:
            parts.append(f"{key} {row[key]:.4f}")
    parts.append(f"lr {row['lr']:.3g}")
    return "  ".join(parts) + f"  ({row['seconds']:.1f} s, {examples_per_second:,.0f} ex/s)"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class MetricsLog:
    def __init__(self, directory: Path) -> None:
        self.path = directory / METRICS

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({k: row.get(k) for k in FIELDS}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def keep(self, epochs_done: int) -> None:
        """On resume: forget epochs the checkpoint does not include (logged before a kill
        that came ahead of their checkpoint), so they are not logged twice."""
        rows = [r for r in self.rows() if r["epoch"] <= epochs_done]
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss curves (and validation accuracy, when measured) against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    accuracy = any(r.get("val_accuracy") is not None for r in rows)
    fig = Figure(figsize=(10 if accuracy else 6, 4), dpi=100)
    axes = fig.subplots(1, 2 if accuracy else 1, squeeze=False)[0]
    epochs = [r["epoch"] for r in rows]
    for key in ("train_loss", "val_loss"):
        points = [(e, r[key]) for e, r in zip(epochs, rows, strict=True) if r.get(key) is not None]
        if points:
            axes[0].plot(*zip(*points, strict=True), marker=".", label=key.replace("_", " "))
    axes[0].set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    axes[0].legend()
    if accuracy:
        points = [(e, r["val_accuracy"]) for e, r in zip(epochs, rows, strict=True)]
        axes[1].plot(*zip(*points, strict=True), marker=".", color="tab:green")
        axes[1].set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))
