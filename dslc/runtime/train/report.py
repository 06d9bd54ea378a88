"""What a run shows and leaves behind: a tqdm bar per epoch on a terminal (one summary line per
epoch otherwise), runs/NAME/metrics.jsonl (one JSON object per epoch), and curves.png."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from dslc import untrusted
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
            f.write(json.dumps(_ordered(row)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[dict[str, Any]]:
        """The rows logged so far. A line that is no row (a write torn by a crash, an edit)
        is skipped with a warning naming the file and line, not refused: the log is a record
        of the run, trainer.pt is what resuming needs, and refusing would strand a run over
        its log. `keep` then rewrites the file without it."""
        if not self.path.exists():
            return []
        untrusted.check_size(self.path, "metrics")
        rows = []
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            row, why = _row(line)
            if row is None:
                say(f"warning: {self.path}:{number}: {why}; skipped")
            else:
                rows.append(row)
        return rows

    def keep(self, epochs_done: int) -> None:
        """On resume: forget epochs the checkpoint does not include (logged before a kill
        that came ahead of their checkpoint), so they are not logged twice."""
        rows = [r for r in self.rows() if r["epoch"] <= epochs_done]
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _row(line: str) -> tuple[dict[str, Any] | None, str]:
    """One line of metrics.jsonl as a row of FIELDS, or None and why it is not one."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None, "not JSON (a torn write?)"
    if not isinstance(row, dict):
        return None, "not a JSON object of metrics"
    epoch = row.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        return None, f"epoch {epoch!r} is not an epoch number"
    for key in row:
        value = row.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            return None, f"{key} {value!r} is not a number"
    return _ordered(row), ""


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    """FIELDS first, then the metrics a spec adds (val_macro_f1, val_loss_box, ...) by name."""
    extra = sorted(k for k in row if k not in FIELDS)
    return {k: row.get(k) for k in (*FIELDS, *extra)}


# The panels of curves.png: a title, the y label, and which row keys each plots.
PANELS = (
    ("loss", "loss", lambda k: k in ("train_loss", "val_loss")),
    ("validation accuracy and F1", "fraction", lambda k: "accuracy" in k or "macro_f1" in k),
    ("validation mAP", "mAP", lambda k: k in ("val_map", "val_map50")),
    ("validation loss per output", "loss", lambda k: k.startswith("val_loss_")),
    ("validation error per output", "error", lambda k: k.startswith(("val_mae_", "val_rmse_"))),
)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss curves against the epoch; beside them the validation accuracy, top-k accuracy and
    macro F1 when measured, and for several outputs each output's loss and error."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    keys = sorted({k for r in rows for k, v in r.items() if v is not None})
    panels = [(t, y, [k for k in keys if pick(k)]) for t, y, pick in PANELS]
    panels = [p for p in panels if p[2]]
    fig = Figure(figsize=(5 * len(panels) or 6, 4), dpi=100)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, ylabel, shown) in zip(axes, panels, strict=True):
        for key in sorted(shown, key=lambda k: (k != "train_loss", k)):
            points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
            ax.plot(*zip(*points, strict=True), marker=".", label=key.replace("_", " "))
        ax.set(xlabel="epoch", ylabel=ylabel, title=f"{title}: {name}" if ax is axes[0] else name)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))
