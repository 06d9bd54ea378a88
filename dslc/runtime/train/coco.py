"""COCO-style detection data: `--data instances.json`, or a directory holding annotations.json
and the images. The JSON has `images` [{id, file_name, width, height}], `annotations`
[{image_id, bbox [x, y, w, h], category_id, iscrowd?}] and `categories` [{id, name}];
file_name is relative to the JSON's folder, or to an images/ folder beside it.

Labels: category ids become 1..C in the order of the categories list (0 is the background),
whatever the ids are (COCO's own 80 classes have ids up to 90; torchvision keeps those 91,
dslc numbers them densely); the names, with "__background__" first, are the run's class
names. Crowd annotations (iscrowd 1) are left out, as COCO's evaluation ignores them. Boxes
are checked in the JSON's pixels (objects.TOLERANCE, clipped) and then move with the image:
each image is resized to the model input's size first (boxes scaled alike), then the spec's
preprocess or augment steps run on both (transforms.apply_with_boxes)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dslc import untrusted
from dslc.errors import DslcError
from dslc.runtime.train.images import Folder, header
from dslc.runtime.train.objects import TOLERANCE

ANNOTATIONS = "annotations.json"
BACKGROUND = "__background__"
KEYS = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("image_id", "bbox", "category_id"),
    "categories": ("id", "name"),
}


def is_coco(text: str | None) -> bool:
    """A .json file, or a directory holding annotations.json."""
    path = Path(text) if text else None
    if path is None:
        return False
    return path.suffix.lower() == ".json" or (path / ANNOTATIONS).is_file()


@dataclass
class Annotated(Folder):
    """Images with their objects: per image, boxes (m, 4) as (x1, y1, x2, y2) in the image's
    own pixels and labels (m,) 1..C. `labels`, a class per image in image folders, is the
    number of objects of each image here."""

    boxes: list[np.ndarray] | None = None
    objects: list[np.ndarray] | None = None


def read(text: str, known: list[str] | None = None) -> Annotated:
    """The images and objects of a COCO-style file; `known`: the training set's class names
    (with the background), which a validation file's categories must be."""
    path = Path(text)
    path = path / ANNOTATIONS if path.is_dir() else path
    doc = _json(path)
    for key, fields in KEYS.items():
        _entries(doc, key, fields, path)
    names = [str(c["name"]) for c in doc["categories"]]
    classes = [BACKGROUND, *names]
    if known is not None and classes != known:
        raise DslcError(
            f"{path}: the categories are {', '.join(names)}, but the training data's are "
            f"{', '.join(known[1:])}",
            hint="give validation data with the training data's categories, in the same order",
        )
    label = {c["id"]: i for i, c in enumerate(doc["categories"], start=1)}
    images = {im["id"]: i for i, im in enumerate(doc["images"])}
    per_image: list[list[tuple[np.ndarray, int]]] = [[] for _ in images]
    for ann in doc["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        i = _lookup(images, ann, "image_id", "image", path)
        box = _box(ann, doc["images"][i], path)
        per_image[i].append((box, _lookup(label, ann, "category_id", "category", path)))
    if not any(per_image):
        raise DslcError(f"{path}: no objects at all (no annotations outside crowds)")
    files, sizes = _files(doc["images"], path)
    boxes = [np.array([b for b, _ in objs], np.float32).reshape(-1, 4) for objs in per_image]
    objects = [np.array([k for _, k in objs], np.int64) for objs in per_image]
    counts = np.array([len(o) for o in objects], np.int64)
    return Annotated(path.parent, classes, files, counts, sizes, boxes, objects)


def _json(path: Path) -> dict:
    try:
        untrusted.check_size(path, "annotations")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DslcError(f"data file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise DslcError(f"cannot read {path} as COCO-style JSON: {err}") from None
    if not isinstance(doc, dict):
        raise DslcError(f"{path}: COCO-style JSON is an object with images, annotations, ...")
    return doc


def _entries(doc: dict, key: str, fields: tuple[str, ...], path: Path) -> None:
    entries = doc.get(key)
    if not isinstance(entries, list):
        raise DslcError(
            f"{path}: no '{key}' list",
            hint="COCO-style JSON holds images, annotations and categories lists",
        )
    for n, entry in enumerate(entries):
        missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise DslcError(
                f"{path}: {key}[{n}] has no '{missing[0]}'",
                hint=f"each of {key} has {', '.join(fields)}",
            )


def _lookup(table: dict, ann: dict, key: str, what: str, path: Path) -> int:
    value = ann[key]
    if isinstance(value, bool) or value not in table:
        raise DslcError(
            f"{path}: annotation {ann.get('id', '?')} names {what} {value!r}, which "
            f"the file's {what == 'image' and 'images' or 'categories'} do not hold"
        )
    return table[value]


def _box(ann: dict, image: dict, path: Path) -> np.ndarray:
    """(x1, y1, x2, y2) of an annotation's [x, y, w, h], checked against its image."""
    where = f"{path}: annotation {ann.get('id', '?')} (image {image['id']})"
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
        width, height = float(image["width"]), float(image["height"])
    except (TypeError, ValueError):
        raise DslcError(f"{where}: bbox {ann['bbox']!r} is not [x, y, width, height]") from None
    if not (w > 0 and h > 0):
        raise DslcError(f"{where}: the box [{x:g}, {y:g}, {w:g}, {h:g}] has no area")
    if x < -TOLERANCE or y < -TOLERANCE or x + w > width + TOLERANCE or y + h > height + TOLERANCE:
        raise DslcError(
            f"{where}: the box [{x:g}, {y:g}, {w:g}, {h:g}] lies outside the image, "
            f"{width:g}x{height:g}",
            hint=f"up to {TOLERANCE:g} pixel beyond the edge is clipped",
        )
    box = np.array([x, y, x + w, y + h], np.float32)
    return np.clip(box, 0, [width, height, width, height]).astype(np.float32)


def _files(entries: list[dict], path: Path) -> tuple[list[Path], list[tuple[int, int]]]:
    """Each image's file (beside the JSON, or in images/ there) and its (height, width),
    which must be the JSON's."""
    files, sizes = [], []
    for entry in entries:
        name = str(entry["file_name"])
        found = [p for p in (path.parent / name, path.parent / "images" / name) if p.is_file()]
        if not found:
            raise DslcError(
                f"{path}: image {entry['id']} is {name}, which is neither in {path.parent} nor "
                f"in {path.parent / 'images'}"
            )
        hw = header(found[0])
        if hw != (entry["height"], entry["width"]):
            raise DslcError(
                f"{found[0]}: the image is {hw[1]}x{hw[0]}, but {path} says "
                f"{entry['width']}x{entry['height']} (image {entry['id']})",
                hint="the boxes are in the JSON's pixels, so width and height must be the file's",
            )
        files.append(found[0])
        sizes.append(hw)
    return files, sizes
