"""Per-object targets (detection): a target whose dim 0 is a symbol other than the batch's
holds one row per object, not per example. The f32 (M, 5) one holds boxes as rows (image, x1,
y1, x2, y2), torchvision's RoI format, in the model input's pixels; column 0 is the index of
the object's image: in a file, among the file's images; in a batch, the image's position in
the batch. The other per-object targets (labels: i64[M]) are aligned with it row by row.

`check` refuses bad objects before training (an image index past the file's images, a box
with no area or outside the image by more than TOLERANCE pixels, a label outside 1..C-1);
boxes within the tolerance are clipped to the image. `sort` orders the objects by image, so
that `select` can take the objects of any list of images: splits, batches, shards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dslc.errors import DslcError
from dslc.runtime.train.contract import Contract

TOLERANCE = 1.0  # pixels a box may reach beyond the image (rounding in annotations); clipped


@dataclass(frozen=True)
class Layout:
    names: tuple[str, ...]  # the per-object targets, in the spec's order
    boxes: str  # the f32 (M, 5) one: (image, x1, y1, x2, y2)
    labels: tuple[str, ...]  # per-object integer targets of one dim: classes 1..classes-1
    size: tuple[int, int] | None  # the model input's (height, width), when fixed
    classes: int | None  # the detector's classes, background (0) included


def layout(c: Contract) -> Layout | None:
    """The per-object targets of `c`, or None when every target is per example."""
    first = next(iter(c.inputs.values()), None)
    batch = first[1][0] if first and first[1] else None
    if not isinstance(batch, str):  # a fixed batch: no dim tells images from objects
        return None
    names = tuple(
        k
        for k, (_, shape) in c.targets.items()
        if shape and isinstance(shape[0], str) and shape[0] != batch
    )
    if not names:
        return None
    boxes = [k for k in names if c.targets[k][0].startswith("float") and _is_rows(c, k)]
    if len(boxes) != 1:
        listed = ", ".join(f"{k}: {d}{list(s)}" for k, (d, s) in c.targets.items())
        raise DslcError(
            f"model {c.name} has per-object targets ({', '.join(names)}) but "
            f"{len(boxes) or 'no'} f32[M, 5] box targets (image, x1, y1, x2, y2): {listed}",
            hint="declare one `target boxes: f32[M, 5]`, whose column 0 says each object's image",
        )
    integer = [k for k in names if c.targets[k][0].startswith("int")]
    labels = tuple(k for k in integer if len(c.targets[k][1]) == 1)
    return Layout(names, boxes[0], labels, _image_size(c), c.object_classes)


def _is_rows(c: Contract, name: str) -> bool:
    return tuple(c.targets[name][1][1:]) == (5,)


def _image_size(c: Contract) -> tuple[int, int] | None:
    for _, shape in c.inputs.values():
        if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
            return int(shape[2]), int(shape[3])
    return None


def count(arrays: dict[str, np.ndarray], lay: Layout) -> int:
    """The images of a data set: the length of its per-example arrays."""
    return len(next(a for k, a in arrays.items() if k not in lay.names))


def check(arrays: dict[str, np.ndarray], lay: Layout, model: str, source: str) -> None:
    """Refuse objects no model could learn from (see the module docstring); clips boxes
    within TOLERANCE of the image, in place."""
    images = count(arrays, lay)
    boxes = arrays[lay.boxes]
    if len(boxes) == 0:
        raise DslcError(
            f"{source}: no objects at all ('{lay.boxes}' has 0 rows)",
            hint="a detection data set needs boxes; images without objects are fine among others",
        )
    owner = boxes[:, 0]
    bad = np.flatnonzero((owner != np.round(owner)) | (owner < 0) | (owner >= images))
    if bad.size:
        i = int(bad[0])
        raise DslcError(
            f"{source}: object {i} of '{lay.boxes}' belongs to image {owner[i]:g}, but the "
            f"file has {images} images (0 to {images - 1})",
            hint="column 0 of a box row is the index of its image in the file",
        )
    _check_boxes(boxes, lay, source)
    for name in lay.labels:
        _check_labels(arrays[name], owner, lay, name, model, source)


def _check_boxes(boxes: np.ndarray, lay: Layout, source: str) -> None:
    x1, y1, x2, y2 = boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    flat = np.flatnonzero(~((x2 > x1) & (y2 > y1)))  # NaN counts as no area too
    if flat.size:
        i = int(flat[0])
        raise DslcError(
            f"{source}: object {i} (image {boxes[i, 0]:g}) has a box with no area: "
            f"{_box(boxes[i])}",
            hint="boxes are (x1, y1, x2, y2) with x2 > x1 and y2 > y1; COCO's [x, y, w, h] "
            "become (x, y, x + w, y + h)",
        )
    if lay.size is None:
        return
    h, w = lay.size
    limit = np.array([-TOLERANCE, -TOLERANCE, w + TOLERANCE, h + TOLERANCE])
    out = np.flatnonzero((boxes[:, 1:3] < limit[:2]).any(1) | (boxes[:, 3:5] > limit[2:]).any(1))
    if out.size:
        i = int(out[0])
        raise DslcError(
            f"{source}: object {i} (image {boxes[i, 0]:g}) has a box {_box(boxes[i])} outside "
            f"the image, {w}x{h} (width x height)",
            hint=f"boxes are in the model input's pixels; up to {TOLERANCE:g} pixel beyond "
            "the edge is clipped",
        )
    np.clip(boxes[:, 1:5], 0, [w, h, w, h], out=boxes[:, 1:5])


def _box(row: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:g}" for v in row[1:5]) + ")"


def _check_labels(
    labels: np.ndarray, owner: np.ndarray, lay: Layout, name: str, model: str, source: str
) -> None:
    high = lay.classes - 1 if lay.classes is not None else None
    bad = np.flatnonzero((labels < 1) | (labels > high if high is not None else False))
    if not bad.size:
        return
    i = int(bad[0])
    span = f"1 to {high}" if high is not None else "1 or more"
    raise DslcError(
        f"{source}: object {i} (image {owner[i]:g}) of '{name}' has class {labels[i]}, but "
        f"model {model}'s classes are {span} (0 is the background)",
        hint="give the model as many classes as the data has plus one for the background "
        "(a spec parameter such as --param classes=N), or relabel the data",
    )


def sort(arrays: dict[str, np.ndarray], lay: Layout) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The arrays with their objects in image order (stable), and each image's first row:
    `starts` (images + 1), the objects of image i being rows starts[i]:starts[i + 1]."""
    owner = arrays[lay.boxes][:, 0].astype(np.int64)
    order = np.argsort(owner, kind="stable")
    out = {k: a[order] if k in lay.names else a for k, a in arrays.items()}
    counts = np.bincount(owner, minlength=count(arrays, lay))
    return out, np.concatenate([[0], np.cumsum(counts)])


def rows(starts: np.ndarray, index: Any) -> tuple[np.ndarray, np.ndarray]:
    """The object rows of images `index` (in that order), and each row's image position."""
    index = np.asarray(index, np.int64).reshape(-1)
    first, counts = starts[index], starts[index + 1] - starts[index]
    position = np.repeat(np.arange(len(index)), counts)
    offset = np.arange(len(position)) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(first, counts) + offset, position


def select(arrays: dict[str, Any], starts: np.ndarray, index: Any, lay: Layout) -> dict[str, Any]:
    """Images `index` with their objects, column 0 of the boxes renumbered to the image's
    position in `index`; numpy arrays or torch tensors alike."""
    found, position = rows(starts, index)
    out = {}
    for k, a in arrays.items():
        out[k] = a[found] if k in lay.names else a[np.asarray(index, np.int64).reshape(-1)]
    boxes = out[lay.boxes]
    if isinstance(boxes, np.ndarray):
        boxes[:, 0] = position
    else:
        boxes[:, 0] = boxes.new_tensor(position)
    return out
