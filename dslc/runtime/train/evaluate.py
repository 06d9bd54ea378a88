"""`dslc eval spec.dl --weights W --data TEST`: the spec's loss and every metric of dslc train's
validation (metrics.py) on a data set, from trained weights; for a classifier, a confusion
matrix as a PNG (confusion.png beside the weights unless --confusion names another file); for
a detector, mAP and its detections drawn on the first images (detections.png beside the
weights), the PNG dslc train leaves in its run folder too (`draw_detections`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dslc.api import load
from dslc.errors import DslcError
from dslc.runtime.train import (
    annotated,
    checkpoint,
    coco,
    data,
    mean_ap,
    metrics,
    objects,
    precision,
)
from dslc.runtime.train.contract import contract

DRAWN = 4  # images in detections.png


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
    test = _data(c, o)
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
    drawn = weights.parent / mean_ap.PLOT
    if draw_detections(c, module, test, getattr(test, "classes", None), drawn, device):
        written.append(drawn)
    return "\n".join(lines), written


def _data(c: Any, o: Options) -> Any:
    if coco.is_coco(o.data):
        return annotated.evaluation_set(c, o.data, workers=0)
    arrays = data.load_for(c, o.data, o.columns)
    return data.to_dataset(arrays, c.arrays, o.data, objects.layout(c))


def draw_detections(
    c: Any, module: Any, images: Any, classes: list[str] | None, path: Path, device: Any
) -> bool:
    """For a detector: its detections on the first DRAWN images of `images`, drawn on them
    (mean_ap.plot) into `path`; False for other models."""
    import torch

    lay = objects.layout(c) if c.detections else None
    if lay is None or images is None or len(images) == 0:
        return False
    batch = images.take(list(range(min(DRAWN, len(images)))))
    module.eval()
    with torch.no_grad():
        values = metrics.forward(c, module, {k: t.to(device) for k, t in batch.items()})
    mean_ap.plot(values, c, lay, classes, path)
    return True


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
