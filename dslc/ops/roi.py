"""Pooling a region of interest of a feature map into a fixed grid: RoI Align (Mask R-CNN; on
a feature pyramid, torchvision's MultiScaleRoIAlign) and RoI pooling (Fast R-CNN). RoIs are one
tensor (K, 5) of rows (image index, x1, y1, x2, y2) in input-image pixels, torchvision's
format; ONNX's RoiAlign takes the boxes (K, 4) and the image indices (K,) apart."""

from __future__ import annotations

import math

from dslc.diagnostics import SpecError
from dslc.ir.types import TensorType
from dslc.ops.base import Attr, OpDef, expect_rank, ntuple, register
from dslc.ops.pycode import py
from dslc.ops.roi_source import MULTI_SCALE_ROI_ALIGN, ROI_ALIGN, ROI_POOL

OUTPUT_SIZE = Attr(
    "output_size", "ints", 7, "bins per RoI: one int, or [height, width]", positive=True
)
ROIS_HINT = "one row (image index, x1, y1, x2, y2) per RoI, in input-image pixels"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def check_rois(op: str, rois: TensorType) -> None:
    if rois.dtype != "f32" or rois.rank != 2 or rois.shape[1] != 5:
        raise SpecError(f"{op}: the rois must be f32[K, 5], got {rois}", hint=ROIS_HINT)


def check_features(op: str, features: list[TensorType]) -> None:
    """Feature maps (N, C, H, W), f32, the same images and channels on every level."""
    for i, x in enumerate(features):
        expect_rank(op, x, (4,), " (N, C, H, W) of features")
        if x.dtype != "f32":
            raise SpecError(f"{op}: the features must be f32, got {x}")
        if x.shape[:2] != features[0].shape[:2]:
            raise SpecError(
                f"{op}: feature level {i} is {x} but level 0 is {features[0]}",
                hint="every level holds the same images with the same channels (FPN: lateral 1x1s)",
            )


def pooled_type(features: TensorType, rois: TensorType, size: tuple[int, int]) -> TensorType:
    return TensorType("f32", (rois.shape[0], features.shape[1], *size))


def split_rois(node, b, rois: str) -> tuple[str, str]:
    """ONNX's RoiAlign inputs from rows (image index, x1, y1, x2, y2): the boxes (K, 4) and
    the image indices (K,) int64."""
    cols = [b.const(node, "x1", [1], "i64"), b.const(node, "end", [5], "i64")]
    boxes = b.add(node, "Slice", [rois, *cols, cols[0]], [b.temp(node, "boxes")])
    first = b.const(node, "column0", 0, "i64")
    image = b.add(node, "Gather", [rois, first], [b.temp(node, "image")], axis=1)
    index = b.add(node, "Cast", [image], [b.temp(node, "index")], to=7)  # INT64
    return boxes, index


@register
class RoiAlign(OpDef):
    name = "roi_align"
    family = "detection"
    doc = (
        "RoI Align (He et al., 2017), torchvision.ops.roi_align: `[features, rois]`, the rois "
        "f32[K, 5] last, gives f32[K, C, *output_size], each bin the average of the features "
        "bilinearly interpolated at sampling_ratio x sampling_ratio points (<= 0: "
        "ceil(RoI size / bins) per RoI). With several feature maps, an FPN's levels finest "
        "first, `[p2, p3, p4, p5, rois]`, it is torchvision's MultiScaleRoIAlign: each RoI is "
        "pooled from level floor(canonical_level + log2(sqrt(area) / canonical_scale)), "
        "clamped to the levels given; spatial_scale then lists each level's scale, powers of "
        "two halving level by level. ONNX: RoiAlign; over levels, each RoI's level computed "
        "in the graph, then per level NonZero, Gather, RoiAlign and ScatterND."
    )
    example = "[p2, p3, p4, p5, rois] -> roi_align(7, [0.25, 0.125, 0.0625, 0.03125], 2)"
    inputs = ("*xs",)
    rois_input = -1
    attrs = (
        OUTPUT_SIZE,
        Attr(
            "spatial_scale",
            "scales",
            1.0,
            "feature pixels per image pixel (1/16 for stride 16); a list, one per level",
            positive=True,
        ),
        Attr("sampling_ratio", "int", -1, "sample points per bin and axis; <= 0: adaptive"),
        Attr("aligned", "bool", False, "shift by half a pixel (Detectron2); one level only"),
        Attr(
            "canonical_scale",
            "int",
            224,
            "several levels: the RoI size of canonical_level",
            positive=True,
        ),
        Attr("canonical_level", "int", 4, "several levels: the level of a canonical_scale RoI"),
    )

    def resolve(self, ins, a):
        scales = a["spatial_scale"]
        scales = tuple(map(float, scales)) if isinstance(scales, tuple) else (float(scales),)
        levels = len(ins) - 1
        if levels < 1:
            raise SpecError(
                "roi_align takes the feature maps, then the rois: `[x, rois] -> roi_align(7)`"
            )
        if len(scales) != levels:
            raise SpecError(
                f"roi_align: {count(levels, 'feature map')} but "
                f"{count(len(scales), 'spatial scale')}",
                hint="one scale per feature map, in the same order, such as [0.25, 0.125]",
            )
        if levels > 1:
            self._check_pyramid(scales, a["aligned"])
        return {
            **a,
            "output_size": ntuple(a["output_size"], 2, self.name, "output_size"),
            "spatial_scale": scales,
        }

    def _check_pyramid(self, scales: tuple[float, ...], aligned: bool) -> None:
        powers = [math.log2(s) for s in scales]
        if not all(p == int(p) and p <= 0 for p in powers):
            raise SpecError(
                "roi_align over levels: the scales must be powers of two, 1 or less, "
                f"got {list(scales)}",
                hint="a level of stride 4 has scale 0.25, of stride 8 0.125, ...",
            )
        if any(q != p - 1 for p, q in zip(powers, powers[1:], strict=False)):
            raise SpecError(
                "roi_align over levels: each level's scale must be half the one before, "
                f"got {list(scales)}",
                hint="give consecutive pyramid levels, finest first (FPN's P2..P5)",
            )
        if aligned:
            raise SpecError(
                "roi_align over levels pools with aligned=false (torchvision's MultiScaleRoIAlign)"
            )

    def infer(self, ins, a):
        *features, rois = ins
        check_features(self.name, features)
        check_rois(self.name, rois)
        return pooled_type(features[0], rois, a["output_size"])

    def roi_image(self, node):
        x, scale = node.inputs[0].type, node.attrs["spatial_scale"][0]
        h, w = x.shape[2:]
        return (h / scale, w / scale) if isinstance(h, int) and isinstance(w, int) else None

    def node_helpers(self, node):
        if len(node.inputs) == 2:
            return {"roi_align": ROI_ALIGN}
        return {"roi_align": ROI_ALIGN, "multi_scale_roi_align": MULTI_SCALE_ROI_ALIGN}

    def torch_call(self, node, args, module):
        """`roi_align(x, rois, (7, 7), spatial_scale=0.0625)`, or over levels
        `multi_scale_roi_align([p2, p3], rois, (7, 7), [0.25, 0.125])`; keywords left out at
        their defaults."""
        a, (*features, rois) = node.attrs, args
        keep = {
            "sampling_ratio": -1,
            "aligned": False,
            "canonical_scale": 224,
            "canonical_level": 4,
        }
        if len(features) == 1:
            keep = {"spatial_scale": 1.0, **keep}
            a = {**a, "spatial_scale": a["spatial_scale"][0]}
            func, first = "roi_align", features[0]
        else:
            func, first = "multi_scale_roi_align", f"[{', '.join(features)}]"
        keywords = [f"{k}={py(a[k])}" for k, d in keep.items() if a[k] != d]
        scales = [] if len(features) == 1 else [py(list(a["spatial_scale"]))]
        return f"{func}({', '.join([first, rois, py(a['output_size']), *scales, *keywords])})"

    def onnx(self, node, b, ins, outs):
        *features, rois = ins
        boxes, index = split_rois(node, b, rois)
        if len(features) == 1:
            self._align(node, b, features[0], boxes, index, 0, outs[0])
            return
        levels = self._levels(node, b, boxes)
        result = self._zeros(node, b, features[0], rois)
        for i, x in enumerate(features):  # the RoIs of level i: Gather, RoiAlign, Scatter back
            level = b.const(node, f"level{i}", i, "i64")
            here = b.add(node, "Equal", [levels, level], [b.temp(node, f"is{i}")])
            found = b.add(node, "NonZero", [here], [b.temp(node, f"nonzero{i}")])  # (1, M)
            where = b.add(node, "Transpose", [found], [b.temp(node, f"where{i}")], perm=[1, 0])
            picked = b.add(node, "GatherND", [boxes, where], [b.temp(node, f"boxes{i}")])
            image = b.add(node, "GatherND", [index, where], [b.temp(node, f"index{i}")])
            pooled = self._align(node, b, x, picked, image, i, b.temp(node, f"pooled{i}"))
            done = outs[0] if i == len(features) - 1 else b.temp(node, f"result{i}")
            result = b.add(node, "ScatterND", [result, where, pooled], [done])

    def _align(self, node, b, x: str, boxes: str, index: str, level: int, out: str) -> str:
        a = node.attrs
        return b.add(
            node,
            "RoiAlign",
            [x, boxes, index],
            [out],
            mode="avg",
            output_height=a["output_size"][0],
            output_width=a["output_size"][1],
            sampling_ratio=max(a["sampling_ratio"], 0),
            spatial_scale=a["spatial_scale"][level],
            coordinate_transformation_mode="half_pixel" if a["aligned"] else "output_half_pixel",
        )

    def _levels(self, node, b, boxes: str) -> str:
        """Each RoI's pyramid level counted from the first (K,) int64, as LevelMapper computes
        it: floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6), clamped."""
        a, scales = node.attrs, node.attrs["spatial_scale"]
        k_min = -round(math.log2(scales[0]))

        def step(name: str, op: str, *inputs: str, **attrs: int) -> str:
            return b.add(node, op, list(inputs), [b.temp(node, name)], **attrs)

        def num(name: str, value: float | list[int], dtype: str = "f32") -> str:
            return b.const(node, name, value, dtype)

        col, axis = {i: num(f"col{i}", [i], "i64") for i in (0, 2, 4)}, num("axis1", [1], "i64")
        first = step("x1y1", "Slice", boxes, col[0], col[2], axis)
        last = step("x2y2", "Slice", boxes, col[2], col[4], axis)
        area = step("area", "ReduceProd", step("sides", "Sub", last, first), axis, keepdims=0)
        ratio = step(
            "ratio", "Div", step("size", "Sqrt", area), num("canonical", a["canonical_scale"])
        )
        log2 = step("log2", "Div", step("ln", "Log", ratio), num("ln2", math.log(2.0)))
        level = step("level", "Add", num("canonical_level", a["canonical_level"]), log2)
        level = step("floor", "Floor", step("level_eps", "Add", level, num("eps", 1e-6)))
        low, high = num("k_min", k_min), num("k_max", k_min + len(scales) - 1)
        level = step("from_first", "Sub", step("clipped", "Clip", level, low, high), low)
        return step("levels", "Cast", level, to=7)  # INT64

    def _zeros(self, node, b, x: str, rois: str) -> str:
        """(K, C, oh, ow) of zeros: K from the rois, C from the features, at run time."""
        k = b.add(node, "Shape", [rois], [b.temp(node, "k")], end=1)
        ch = b.add(node, "Shape", [x], [b.temp(node, "c")], start=1, end=2)
        size = b.const(node, "output_size", list(node.attrs["output_size"]), "i64")
        shape = b.add(node, "Concat", [k, ch, size], [b.temp(node, "shape")], axis=0)
        return b.add(node, "ConstantOfShape", [shape], [b.temp(node, "zeros")])


@register
class RoiPool(OpDef):
    name = "roi_pool"
    family = "detection"
    doc = (
        "RoI pooling (Girshick, 2015), torchvision.ops.roi_pool: each RoI of `rois` f32[K, 5] "
        "rounded to whole pixels of the features (N, C, H, W) at spatial_scale, cut into "
        "output_size bins (floor and ceil of their edges), each the maximum of its pixels, "
        "0 for a bin outside the map. Gives f32[K, C, *output_size]. ONNX: MaxRoiPool."
    )
    example = "pooled = roi_pool(features, rois, 7, spatial_scale=0.0625)"
    inputs = ("x", "rois")
    rois_input = 1
    attrs = (
        OUTPUT_SIZE,
        Attr("spatial_scale", "float", 1.0, "feature pixels per image pixel", positive=True),
    )

    def resolve(self, ins, a):
        return {**a, "output_size": ntuple(a["output_size"], 2, self.name, "output_size")}

    def infer(self, ins, a):
        x, rois = ins
        check_features(self.name, [x])
        check_rois(self.name, rois)
        return pooled_type(x, rois, a["output_size"])

    def roi_image(self, node):
        x, scale = node.inputs[0].type, node.attrs["spatial_scale"]
        h, w = x.shape[2:]
        return (h / scale, w / scale) if isinstance(h, int) and isinstance(w, int) else None

    torch_helpers = {"roi_pool": ROI_POOL}

    def torch_call(self, node, args, module):
        a = node.attrs
        scale = f", spatial_scale={a['spatial_scale']!r}" if a["spatial_scale"] != 1.0 else ""
        return f"roi_pool({args[0]}, {args[1]}, {py(a['output_size'])}{scale})"

    def onnx(self, node, b, ins, outs):
        a = node.attrs
        b.add(
            node,
            "MaxRoiPool",
            ins,
            outs,
            pooled_shape=list(a["output_size"]),
            spatial_scale=a["spatial_scale"],
        )
