"""Image preprocessing and augmentation steps: the `preprocess = [...]` and `augment = [...]`
settings of a train section, one small class per step holding its arguments (checked when the
spec is lowered), the image size it gives, and what it does to an image.

Steps work on Pillow images (resize, crops, flip, colour), then the pixels become a float
tensor in [0, 1] and `normalize` (the last step, when given) subtracts the mean and divides by
the standard deviation per channel. Not torchvision.transforms.v2: the torchvision here is a
test-only install whose C extension does not load, and `import torchvision` fails without a
stub for its meta registrations (tests/reference.py); Pillow is a dependency of dslc and its
resampling is what torchvision's own PIL path calls. Random steps draw from the numpy
Generator they are given: dslc.runtime.train.images seeds one per example and epoch, so
augmentation does not depend on the number of loader workers or on resuming."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dslc.ops.base import REQUIRED, Attr

Size = tuple[int, int]  # (height, width), as torch lays out images


def _pair(v: int | tuple) -> Size:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Step:
    name = ""
    doc = ""
    attrs: tuple[Attr, ...] = ()
    random = False  # a random step belongs in `augment` only: evaluation is deterministic
    # What the step does to boxes (x1, y1, x2, y2) drawn on the image: "kept" (colours,
    # normalize), "moved" (place() maps them), or "refused" (crops, which would cut them).
    boxes = "kept"

    def size(self, a: dict[str, Any], hw: Size) -> Size:
        """The height and width of the image this step gives for one of size `hw`."""
        return hw

    def apply(self, a: dict[str, Any], image: Any, rng: Any) -> Any:
        return image

    def check(self, a: dict[str, Any]) -> str | None:
        """What is wrong with arguments that each pass their own check, or None."""
        return None

    def place(self, a: dict[str, Any], image: Any, boxes: Any, rng: Any) -> tuple[Any, Any]:
        """The image and its boxes (M, 4) after the step (drawing from `rng` as apply does)."""
        return self.apply(a, image, rng), boxes


class Resize(Step):
    name = "resize"
    doc = "an integer: the shorter side to this size (aspect kept); [h, w]: exactly this size"
    attrs = (Attr("size", "ints", REQUIRED, "pixels", positive=True),)

    def size(self, a: dict[str, Any], hw: Size) -> Size:
        if not isinstance(a["size"], int):
            return _pair(a["size"])
        h, w = hw
        short = a["size"]
        if h <= w:
            return short, max(1, int(short * w / h))
        return max(1, int(short * h / w)), short

    def apply(self, a: dict[str, Any], image: Any, rng: Any) -> Any:
        from PIL import Image

        h, w = self.size(a, (image.height, image.width))
        return image.resize((w, h), Image.Resampling.BILINEAR)

    boxes = "moved"

    def place(self, a: dict[str, Any], image: Any, boxes: Any, rng: Any) -> tuple[Any, Any]:
        h, w = self.size(a, (image.height, image.width))
        scale = np.array([w / image.width, h / image.height] * 2, np.float32)
        return self.apply(a, image, rng), boxes * scale


class CenterCrop(Step):
    name = "center_crop"
    doc = "the central size x size (or [h, w]) pixels"
    boxes = "refused"
    attrs = (Attr("size", "ints", REQUIRED, "pixels", positive=True),)

    def size(self, a: dict[str, Any], hw: Size) -> Size:
        return _pair(a["size"])

    def apply(self, a: dict[str, Any], image: Any, rng: Any) -> Any:
        h, w = _pair(a["size"])
        top, left = round((image.height - h) / 2), round((image.width - w) / 2)
        return image.crop((left, top, left + w, top + h))  # pads with zeros when larger


class RandomResizedCrop(Step):
    name = "random_resized_crop"
    doc = (
        "a random crop of `scale` of the area and `ratio` of aspect, resized to size (as "
        "torchvision's RandomResizedCrop)"
    )
    random = True
    boxes = "refused"
    attrs = (
        Attr("size", "ints", REQUIRED, "pixels", positive=True),
        Attr("scale", "floats", (0.08, 1.0), "the crop's share of the area: [low, high]"),
        Attr("ratio", "floats", (3 / 4, 4 / 3), "the crop's width / height: [low, high]"),
    )

    def size(self, a: dict[str, Any], hw: Size) -> Size:
        return _pair(a["size"])

    def check(self, a: dict[str, Any]) -> str | None:
        for key in ("scale", "ratio"):
            low_high = a[key]
            if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
                return f"{key} must be [low, high] with 0 < low <= high, got {list(low_high)}"
        return None

    def apply(self, a: dict[str, Any], image: Any, rng: Any) -> Any:
        from PIL import Image

        left, top, w, h = self._box(a, image.width, image.height, rng)
        out_h, out_w = _pair(a["size"])
        crop = image.crop((left, top, left + w, top + h))  # then resize, as torchvision does
        return crop.resize((out_w, out_h), Image.Resampling.BILINEAR)

    def _box(self, a: dict[str, Any], width: int, height: int, rng: Any) -> tuple:
        """torchvision's algorithm: ten tries at a random area and log-uniform aspect, then
        the whole image cropped to the nearest allowed aspect."""
        area = width * height
        log_ratio = (math.log(a["ratio"][0]), math.log(a["ratio"][1]))
        for _ in range(10):
            target = area * rng.uniform(a["scale"][0], a["scale"][1])
            aspect = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return (
                    int(rng.integers(0, width - w + 1)),
                    int(rng.integers(0, height - h + 1)),
                    w,
                    h,
                )
        aspect = width / height
        if aspect < a["ratio"][0]:
            w, h = width, round(width / a["ratio"][0])
        elif aspect > a["ratio"][1]:
            w, h = round(height * a["ratio"][1]), height
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h


class HorizontalFlip(Step):
    name = "hflip"
    doc = "mirror left to right with probability p"
    random = True
    attrs = (Attr("p", "float", 0.5, "the probability", minimum=0, maximum=1),)

    boxes = "moved"

    def apply(self, a: dict[str, Any], image: Any, rng: Any) -> Any:
        return self.place(a, image, None, rng)[0]

    def place(self, a: dict[str, Any], image: Any, boxes: Any, rng: Any) -> tuple[Any, Any]:
        from PIL import Image

        if rng.uniform() >= a["p"]:
            return image, boxes
        flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if boxes is None:
            return flipped, None
        x1, y1, x2, y2 = boxes.T  # x -> width - x, so the left edge comes from the right one
        return flipped, np.stack([image.width - x2, y1, image.width - x1, y2], axis=1)


class ColorJitter(Step):
    name = "color_jitter"
    doc = (
        "brightness, contrast and saturation each scaled by a random factor in [1 - x, 1 + x], "
        "the hue shifted by a random fraction of the colour circle in [-hue, hue], in a random "
        "order (as torchvision's ColorJitter; saturation and hue only for RGB)"
    )
    random = True
    attrs = (
        *(
            Attr(k, "float", 0.0, f"the largest change of {k}", minimum=0, maximum=1)
            for k in ("brightness", "contrast", "saturation")
        ),
        Attr("hue", "float", 0.0, "the largest hue shift (of the circle)", minimum=0, maximum=0.5),
    )

    def apply(self, a: dict[str, Any], image: Any, rng: Any) -> Any:
        for key, factor in self.draw(a, rng):
            image = self.adjust(image, key, factor)
        return image

    def draw(self, a: dict[str, Any], rng: Any) -> list[tuple[str, float]]:
        """The adjustments for one image, in the order they apply: torchvision's ColorJitter
        draws a random order of the four, then a factor for each that is given."""
        given = [k for k in ("brightness", "contrast", "saturation", "hue") if a[k]]
        if len(given) > 1:
            given = [given[i] for i in rng.permutation(len(given))]
        return [
            (k, rng.uniform(-a[k], a[k]) if k == "hue" else rng.uniform(1 - a[k], 1 + a[k]))
            for k in given
        ]

    @staticmethod
    def adjust(image: Any, key: str, factor: float) -> Any:
        """One adjustment, as torchvision's functional adjust_* on a Pillow image."""
        from PIL import Image, ImageEnhance

        if key in ("saturation", "hue") and image.mode != "RGB":
            return image  # a grey image has neither
        if key != "hue":
            enhancer = {"brightness": ImageEnhance.Brightness, "contrast": ImageEnhance.Contrast}
            return enhancer.get(key, ImageEnhance.Color)(image).enhance(factor)
        h, s, v = image.convert("HSV").split()
        # the hue channel is 0..255 around the circle: the shift wraps, truncated as
        # torchvision's np.int32(factor * 255) is
        shift = np.uint8(int(factor * 255) % 256)
        h = Image.fromarray(np.asarray(h, np.uint8) + shift, "L")
        return Image.merge("HSV", (h, s, v)).convert("RGB")


class Normalize(Step):
    name = "normalize"
    doc = "(pixel - mean) / std per channel, on pixels in [0, 1]; the last step"
    attrs = (
        Attr("mean", "floats", REQUIRED, "one per channel"),
        Attr("std", "floats", REQUIRED, "one per channel, positive", positive=True),
    )

    def check(self, a: dict[str, Any]) -> str | None:
        if len(a["mean"]) != len(a["std"]):
            return f"mean has {len(a['mean'])} values and std {len(a['std'])}"
        return None


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Resize(),
        CenterCrop(),
        RandomResizedCrop(),
        HorizontalFlip(),
        ColorJitter(),
        Normalize(),
    )
}
PIPELINES = ("preprocess", "augment")  # evaluation (and training without augment), training


@dataclass(frozen=True)
class Transform:
    """One step of a pipeline with its checked arguments."""

    step: Step
    attrs: dict[str, Any]

    def text(self) -> str:
        def fmt(v: Any) -> str:
            return "[" + ", ".join(map(fmt, v)) + "]" if isinstance(v, tuple) else repr(v)

        return f"{self.step.name}({', '.join(f'{k}={fmt(v)}' for k, v in self.attrs.items())})"


Pipeline = tuple[Transform, ...]


def output_size(pipeline: Pipeline, hw: Size) -> Size:
    for t in pipeline:
        hw = t.step.size(t.attrs, hw)
    return hw


def normalization(pipeline: Pipeline) -> tuple[tuple, tuple] | None:
    """The (mean, std) of the pipeline's normalize step, or None."""
    last = pipeline[-1] if pipeline else None
    return (
        (last.attrs["mean"], last.attrs["std"]) if last and last.step.name == "normalize" else None
    )


def apply(pipeline: Pipeline, image: Any, rng: Any) -> Any:
    """A Pillow image through the pipeline's image steps (all but normalize)."""
    for t in pipeline:
        image = t.step.apply(t.attrs, image, rng)
    return image


def refused_for_boxes(pipeline: Pipeline) -> Transform | None:
    """The first step that cannot carry boxes along (a crop), or None."""
    return next((t for t in pipeline if t.step.boxes == "refused"), None)


def apply_with_boxes(pipeline: Pipeline, image: Any, boxes: Any, rng: Any) -> tuple[Any, Any]:
    """A Pillow image and its boxes (M, 4; x1, y1, x2, y2 in its pixels) through the
    pipeline, the boxes moved as the image is (scaled by resize, mirrored by hflip); the
    random draws are apply's, so an image is augmented alike with or without boxes."""
    for t in pipeline:
        image, boxes = t.step.place(t.attrs, image, boxes, rng)
    return image, boxes
