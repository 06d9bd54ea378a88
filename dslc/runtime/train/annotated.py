"""Detection data sets of COCO-style files (coco.py): images decoded lazily, per batch, by the
DataLoader workers of images.ImageSet, each with its objects. An image is resized to the model
input's size (its boxes scaled alike), then goes through the spec's preprocess or augment
steps with its boxes (transforms.apply_with_boxes: hflip mirrors them); crops, which would
cut boxes, are refused. A batch holds its images' objects as data.Dataset's batches do
(objects.py): rows (image, x1, y1, x2, y2), column 0 the image's position in the batch."""

from __future__ import annotations

from typing import Any

import numpy as np

from dslc import transforms
from dslc.errors import DslcError
from dslc.runtime.train import coco, data, objects
from dslc.runtime.train.contract import Contract
from dslc.runtime.train.images import MODES, ImageSet, raise_errors


class ObjectSet(ImageSet):
    """Images with their objects; names: (image input, box target, label target)."""

    size: tuple[int, int] = (0, 0)  # the model input's (height, width)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        import torch

        i, epoch = key
        n = int(self.index[i])
        scene = self.folder
        assert isinstance(scene, coco.Annotated) and scene.boxes and scene.objects
        try:
            image, boxes = fit(self.decode(n), scene.boxes[n], self.size)
            image, boxes = transforms.apply_with_boxes(
                self.pipeline, image, boxes, self.rng(n, epoch)
            )
            pixels = self.array(image)
        except DslcError as err:
            return err.message
        boxes = np.ascontiguousarray(boxes, np.float32)
        return torch.from_numpy(pixels), torch.from_numpy(boxes), torch.from_numpy(scene.objects[n])

    @staticmethod
    def collate(items: list, names: tuple[str, ...]) -> dict:
        import torch

        raise_errors(items)
        rows = [
            torch.cat([torch.full((len(b), 1), float(i)), b], dim=1)
            for i, (_, b, _) in enumerate(items)
        ]
        return {
            names[0]: torch.stack([p for p, _, _ in items]),
            names[1]: torch.cat(rows).reshape(-1, 5),
            names[2]: torch.cat([k for _, _, k in items]),
        }


def fit(image: Any, boxes: np.ndarray, size: tuple[int, int]) -> tuple[Any, np.ndarray]:
    """The image resized to `size` (height, width), bilinear, and its boxes scaled alike."""
    if (image.height, image.width) == size:
        return image, boxes
    resize = transforms.STEPS["resize"]
    return resize.place({"size": size}, image, boxes, None)


def roles(c: Contract) -> tuple[str, str, str, int]:
    """The image input, the box and label targets, and the image's channels."""
    lay = objects.layout(c)
    inputs = list(c.inputs.items())
    ok = lay is not None and len(lay.names) == 2 and len(lay.labels) == 1 and len(inputs) == 1
    if ok and lay is not None:
        x, (dtype, shape) = inputs[0]
        ok = len(shape) == 4 and shape[1] in MODES and lay.size is not None
    if not ok or lay is None:
        raise DslcError(
            f"COCO-style data trains a model with one image input f32[N, C, H, W] (C 1 or 3) "
            f"and two per-object targets, boxes f32[M, 5] and labels i64[M]; model {c.name} "
            f"declares " + ", ".join(f"{k}: {d}{list(s)}" for k, (d, s) in c.arrays.items()),
            hint="use .npz data for other models",
        )
    return x, lay.boxes, lay.labels[0], int(shape[1])


def pipelines(c: Contract, size: tuple[int, int]) -> dict[str, transforms.Pipeline]:
    """preprocess and augment, checked: no crops, and the model's size kept."""
    steps = c.transforms
    evaluate = steps.get("preprocess", ())
    out = {"preprocess": evaluate, "augment": steps.get("augment", evaluate)}
    for key, pipeline in out.items():
        step = transforms.refused_for_boxes(pipeline)
        if step is not None:
            raise DslcError(
                f"{key}: {step.step.name} is not supported with per-object targets: a crop "
                "would cut boxes",
                hint="detection images are resized to the model's input size; drop the crop "
                "(hflip, color_jitter, normalize and resize move the boxes along)",
            )
        got = transforms.output_size(pipeline, size)
        if got != size:
            raise DslcError(
                f"{key} makes the {size[1]}x{size[0]} images {got[1]}x{got[0]}, but the model "
                f"takes {size[1]}x{size[0]}",
                hint="detection images are resized to the model's input size before the steps",
            )
    return out


def check_classes(scene: coco.Annotated, c: Contract, source: str) -> None:
    have = len(scene.classes) - 1
    lay = objects.layout(c)
    if lay is not None and lay.classes is not None and have > lay.classes - 1:
        raise DslcError(
            f"{source}: {have} categories ({', '.join(scene.classes[1:])}), but model "
            f"{c.name}'s detector has {lay.classes - 1} classes besides the background",
            hint="give the model one class per category plus the background (a spec "
            "parameter such as --param classes=N)",
        )


def datasets(
    c: Contract, train: str, val: str | None, fraction: float, seed: int, workers: int
) -> tuple[ObjectSet, ObjectSet | None, list[str]]:
    """The training and validation sets (validation: `val`, or a random `fraction` of
    `train`, or none when 0), and the class names, background first."""
    scene = _scene(c, train)
    index = np.arange(len(scene.files))
    held: coco.Annotated | None = None
    if val:
        held = coco.read(val, scene.classes)
        val_index = np.arange(len(held.files))
    elif fraction:
        parts = data.split({"index": index}, fraction, seed, train)
        index, val_index, held = parts[0]["index"], parts[1]["index"], scene
    made = _set(c, scene, index, seed, workers, train=True)
    if held is None:
        return made, None, scene.classes
    return made, _set(c, held, val_index, seed, workers, train=False), scene.classes


def evaluation_set(c: Contract, text: str, workers: int) -> ObjectSet:
    """A COCO-style test set (dslc eval) through preprocess, with its class names."""
    scene = _scene(c, text)
    made = _set(c, scene, np.arange(len(scene.files)), 0, workers, train=False)
    made.classes = scene.classes
    return made


def _scene(c: Contract, text: str) -> coco.Annotated:
    roles(c)  # the model takes COCO-style data and its steps keep boxes, before any reading
    lay = objects.layout(c)
    assert lay is not None and lay.size is not None
    pipelines(c, lay.size)
    scene = coco.read(text)
    check_classes(scene, c, text)
    return scene


def _set(
    c: Contract, scene: coco.Annotated, index: np.ndarray, seed: int, workers: int, train: bool
) -> ObjectSet:
    x, boxes, labels, channels = roles(c)
    lay = objects.layout(c)
    assert lay is not None and lay.size is not None
    ways = pipelines(c, lay.size)
    pipeline = ways["augment" if train else "preprocess"]
    made = ObjectSet(scene, index, pipeline, (x, boxes, labels), channels, seed, train, workers)
    made.size = lay.size
    return made
