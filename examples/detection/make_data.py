"""Write a small detection data set: images of one to three drawn shapes each (square, circle,
triangle; the shape is the class, labels 1..3, 0 being the background) with their boxes.

    python examples/detection/make_data.py [OUT_DIR] [IMAGES] [SIZE] [SEED]  # build/shapes 300 64 0

writes OUT_DIR/train.npz and val.npz (`image` (N, 3, SIZE, SIZE) floats in [0, 1], `gt_boxes`
(M, 5) rows (image, x1, y1, x2, y2) in pixels, `gt_labels` (M,): specs/shapes_detector.dl's
targets), and the same images as
COCO-style folders OUT_DIR/coco_train and coco_val (annotations.json, images/*.png), for
`dslc train SPEC --data OUT_DIR/coco_train --val OUT_DIR/coco_val`. Nothing is downloaded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

CLASSES = ("square", "circle", "triangle")  # labels 1, 2, 3


def draw(rng: np.random.Generator, size: int = 64) -> tuple:
    """One image (a Pillow RGB image) with 1 to 3 shapes that do not overlap; their boxes
    (k, 4) as (x1, y1, x2, y2), the edges of the pixels they cover, and labels (k,)."""
    from PIL import Image, ImageDraw

    background = tuple(int(v) for v in rng.integers(0, 80, 3))
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    boxes: list[tuple[int, int, int, int]] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(30):
            r = int(rng.integers(max(3, size // 10), max(4, size // 5) + 1))
            cx, cy = (int(v) for v in rng.integers(r, size - r - 1, 2))
            box = (cx - r, cy - r, cx + r + 1, cy + r + 1)  # Pillow fills both end pixels
            if all(_apart(box, other) for other in boxes):
                break
        else:
            continue
        label = int(rng.integers(1, len(CLASSES) + 1))
        colour = tuple(int(v) for v in rng.integers(150, 256, 3))
        corners = (cx - r, cy - r, cx + r, cy + r)
        if label == 1:
            pen.rectangle(corners, fill=colour)
        elif label == 2:
            pen.ellipse(corners, fill=colour)
        else:
            pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        boxes.append(box)
        labels.append(label)
    return image, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


def _apart(a: tuple, b: tuple, gap: int = 2) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def make(images: int, size: int = 64, seed: int = 0) -> tuple[list, list, list]:
    """`images` drawn images, their boxes and their labels."""
    rng = np.random.default_rng(seed)
    drawn = [draw(rng, size) for _ in range(images)]
    return [d[0] for d in drawn], [d[1] for d in drawn], [d[2] for d in drawn]


def write_npz(
    path: Path,
    images: int,
    size: int = 64,
    seed: int = 0,
    image: str = "image",
    names: tuple[str, str] = ("boxes", "labels"),
) -> Path:
    """path.npz: the images, and the objects' boxes and labels under `names` (the spec's
    per-object targets: specs/shapes_detector.dl calls them gt_boxes and gt_labels)."""
    pictures, boxes, labels = make(images, size, seed)
    pixels = np.stack([np.asarray(p, np.float32).transpose(2, 0, 1) / 255 for p in pictures])
    rows = [
        np.concatenate([np.full((len(b), 1), i, np.float32), b], 1) for i, b in enumerate(boxes)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {image: pixels, names[0]: np.concatenate(rows), names[1]: np.concatenate(labels)}
    np.savez(path, **arrays)
    return path


def write_coco(folder: Path, images: int, size: int = 64, seed: int = 0) -> Path:
    """folder/annotations.json and folder/images/NNNN.png."""
    pictures, boxes, labels = make(images, size, seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    doc: dict = {"images": [], "annotations": [], "categories": []}
    doc["categories"] = [{"id": k, "name": name} for k, name in enumerate(CLASSES, start=1)]
    for i, (picture, bs, ks) in enumerate(zip(pictures, boxes, labels, strict=True)):
        name = f"{i:04d}.png"
        picture.save(folder / "images" / name)
        doc["images"].append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for (x1, y1, x2, y2), k in zip(bs.tolist(), ks.tolist(), strict=True):
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": i + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "category_id": k,
                    "iscrowd": 0,
                }
            )
    (folder / "annotations.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return folder


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else Path("build/shapes")
    images = int(argv[1]) if len(argv) > 1 else 300
    size = int(argv[2]) if len(argv) > 2 else 64
    seed = int(argv[3]) if len(argv) > 3 else 0
    held = max(1, images // 5)
    names = ("gt_boxes", "gt_labels")  # specs/shapes_detector.dl's targets
    write_npz(out / "train.npz", images, size, seed, names=names)
    write_npz(out / "val.npz", held, size, seed + 1, names=names)
    write_coco(out / "coco_train", images, size, seed)
    write_coco(out / "coco_val", held, size, seed + 1)
    print(f"wrote {images} training and {held} validation images to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
