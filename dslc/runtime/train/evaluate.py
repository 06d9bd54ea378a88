"""`dslc eval spec.dl --weights W --data TEST`: the spec's loss and every metric of dslc train's
validation (metrics.py) on a data set, from trained weights; for a classifier, a confusion
matrix as a PNG (confusion.png beside the weights unless --confusion names another file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dslc.api import load
from dslc.errors import DslcError
from dslc.runtime.train import checkpoint, data, metrics, precision
from dslc.runtime.train.contract import contract


@dataclass
class Options:
    spec: str
    weights: str
    data: str
    params: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)
    batch_size: int | None = None
    confusion: str | None = None  # None: confusion.png beside the weights
    precision: str = "fp32"


def evaluate(o: Options) -> tuple[str, list[Path]]:
    """The report to print, and the confusion-matrix files written."""
    import torch

    spec = load(o.spec, o.params)
    c = contract(spec)
    precision.check(o.precision, torch.device("cpu"))
    arrays = data.load(o.data, c.arrays, c.name, o.columns)
    data.check_classes(arrays, c.classes, c.name, o.data, c.ignore)
    test = data.to_dataset(arrays, c.arrays, o.data)
    weights = Path(o.weights)
    if not weights.is_file():
        raise DslcError(f"--weights {weights}: no such file")
    module = c.create_model()
    checkpoint.load_weights(module, weights)
    device = torch.device("cpu")
    loss, meter = metrics.evaluate(
        c,
        module,
        c.create_loss(),
        test,
        o.batch_size or c.training["batch_size"],
        device,
        lambda: precision.autocast(o.precision, device),
    )
    results = {"loss": loss, **meter.results()}
    width = max(len(k) for k in results)
    lines = [f"model {c.name}, weights {weights}, on {o.data} ({len(test)} examples)"]
    lines += [f"  {k:<{width}}  {_number(v)}" for k, v in results.items()]
    written = []
    for key, counts in meter.confusion.items():
        path = _confusion_path(o, weights, key)
        plot_confusion(counts, path, f"{c.name}: {c.metrics[key][0]}")
        written.append(path)
    return "\n".join(lines), written


def _number(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _confusion_path(o: Options, weights: Path, key: str) -> Path:
    base = Path(o.confusion) if o.confusion else weights.parent / "confusion.png"
    suffix = key.removeprefix("accuracy")  # a second classifier: confusion_2.png
    return base.with_name(f"{base.stem}{suffix}{base.suffix or '.png'}")


def plot_confusion(counts: Any, path: Path, title: str) -> None:
    """Rows: true classes; columns: predicted; each cell its count (written in up to 20
    classes), shaded by the fraction of its row."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    counts = counts.numpy()
    classes = counts.shape[0]
    rows = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    size = min(4 + classes * 0.4, 16)
    fig = Figure(figsize=(size, size), dpi=100)
    ax = fig.subplots()
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    if classes <= 20:
        ax.set_xticks(range(classes))
        ax.set_yticks(range(classes))
        for i in range(classes):
            for j in range(classes):
                color = "white" if rows[i, j] > 0.5 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DslcError(f"cannot create {path.parent}: {err.strerror}") from None
    checkpoint.atomic_write(
        path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None})
    )
