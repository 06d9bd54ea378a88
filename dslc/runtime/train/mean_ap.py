"""Detection metrics: mAP@0.5 (`map50`) and mAP@[.5:.95] (`map`) of a detector's outputs
(contract.Contract.detections: the `detections` op's boxes, scores, labels and images)
against the per-object targets (objects.py), by pycocotools' COCOeval: the reference
implementation of COCO's metric (101-point interpolated precision, greedy matching by score,
IoU thresholds .50:.05:.95, up to 100 detections per image, AP averaged over the classes that
have ground truth), rather than our own approximation of it. And the PNG of predicted boxes
that dslc train draws on a few validation images (`plot`)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from dslc.runtime.train.checkpoint import atomic_write
from dslc.runtime.train.contract import Contract
from dslc.runtime.train.objects import Layout

PLOT = "detections.png"


class Detected:
    """The ground truth and the detections of a data set, batch by batch."""

    def __init__(self, c: Contract, lay: Layout) -> None:
        self.roles, self.lay = c.detections, lay
        self.truth: list[np.ndarray] = []  # rows (image, x1, y1, x2, y2, label)
        self.found: list[np.ndarray] = []  # rows (image, x1, y1, x2, y2, score, label)
        self.images = 0

    def add(self, values: dict[str, Any], examples: int) -> None:
        boxes = _numpy(values[self.lay.boxes])
        labels = _numpy(values[self.lay.labels[0]])
        boxes[:, 0] += self.images
        self.truth.append(np.concatenate([boxes, labels[:, None]], axis=1))
        got = {role: _numpy(values[name]) for role, name in self.roles.items()}
        image = got["images"][:, None] + self.images
        parts = [image, got["boxes"], got["scores"][:, None], got["labels"][:, None]]
        self.found.append(np.concatenate(parts, axis=1))
        self.images += examples

    def results(self) -> dict[str, float | None]:
        truth = np.concatenate(self.truth) if self.truth else np.zeros((0, 6))
        found = np.concatenate(self.found) if self.found else np.zeros((0, 7))
        return mean_average_precision(truth, found, self.images)


def _numpy(t: Any) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float64)


def mean_average_precision(
    truth: np.ndarray, found: np.ndarray, images: int
) -> dict[str, float | None]:
    """{"map": mAP@[.5:.95], "map50": mAP@0.5} of detections `found`, rows (image, x1, y1, x2,
    y2, score, label), against `truth`, rows (image, x1, y1, x2, y2, label), over `images`
    images; None without ground truth, 0 without detections."""
    if len(truth) == 0:
        return {"map": None, "map50": None}
    if len(found) == 0:
        return {"map": 0.0, "map50": 0.0}
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    classes = sorted({int(k) for k in truth[:, 5]} | {int(k) for k in found[:, 6]})
    wh = truth[:, 3:5] - truth[:, 1:3]
    gt = COCO()
    gt.dataset = {
        "images": [{"id": i} for i in range(images)],
        "categories": [{"id": k} for k in classes],
        "annotations": [
            {
                "id": n + 1,
                "image_id": int(row[0]),
                "bbox": [float(row[1]), float(row[2]), float(w), float(h)],
                "area": float(w * h),
                "category_id": int(row[5]),
                "iscrowd": 0,
            }
            for n, (row, (w, h)) in enumerate(zip(truth, wh, strict=True))
        ],
    }
    rows = np.concatenate([found[:, :1], found[:, 1:3], found[:, 3:5] - found[:, 1:3]], axis=1)
    rows = np.concatenate([rows, found[:, 5:7]], axis=1)  # (image, x, y, w, h, score, label)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(rows), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return {"map": _stat(stats[0]), "map50": _stat(stats[1])}


def _stat(value: float) -> float | None:
    return None if value < 0 else float(value)  # COCOeval's -1: nothing to measure


def plot(
    batch: dict[str, Any], c: Contract, lay: Layout, classes: list[str] | None, path: Path
) -> None:
    """The batch's images (rescaled to their own range for display: they are normalized)
    with the ground-truth boxes dashed and the detections labelled with class and score."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    image = next(iter(c.inputs))
    pixels = _numpy(batch[image])
    fig = Figure(figsize=(3 * len(pixels), 3.3), dpi=100)
    axes = fig.subplots(1, len(pixels), squeeze=False)[0]
    truth = _numpy(batch[lay.boxes])
    got = {role: _numpy(batch[name]) for role, name in c.detections.items()}
    for i, ax in enumerate(axes):
        shown = pixels[i].transpose(1, 2, 0)
        shown = (shown - shown.min()) / max(float(shown.max() - shown.min()), 1e-12)
        ax.imshow(shown[..., 0] if shown.shape[2] == 1 else shown, cmap="gray")
        for row in truth[truth[:, 0] == i]:
            ax.add_patch(_box(row[1:5], Rectangle, "lime", "--"))
        mine = got["images"] == i
        for box, score, label in zip(
            got["boxes"][mine], got["scores"][mine], got["labels"][mine], strict=True
        ):
            ax.add_patch(_box(box, Rectangle, "red", "-"))
            name = classes[int(label)] if classes and int(label) < len(classes) else str(int(label))
            ax.text(
                box[0],
                box[1],
                f"{name} {score:.2f}",
                color="white",
                fontsize=7,
                va="bottom",
                bbox={"facecolor": "red", "alpha": 0.7, "pad": 1, "linewidth": 0},
            )
        ax.set_axis_off()
    fig.suptitle(f"{c.name}: detections (red), ground truth (dashed)", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))


def _box(xyxy: np.ndarray, rectangle: Any, colour: str, style: str) -> Any:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return rectangle(
        (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linestyle=style, linewidth=1.2
    )
