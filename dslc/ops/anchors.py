"""Anchor boxes (Ren et al., 2015): at every cell of each feature map, one box per size and
aspect ratio, centred on the cell, as torchvision's AnchorGenerator lays them out (cell by
cell, row-major; within a cell, ratio by ratio, then size by size). The sizes are known at
compile time, so ONNX holds the anchors as one constant; PyTorch computes them from the
shapes, as torchvision does."""

from __future__ import annotations

from typing import Any

import numpy as np

from dslc.diagnostics import SpecError
from dslc.ir.types import TensorType
from dslc.ops.base import Attr, OpDef, expect_rank, register

GRID_ANCHORS = '''
def grid_anchors(image, features, sizes, aspect_ratios):
    """Anchors (H * W * A, 4) of each feature map (N, C, H, W): a box of each size in `sizes`
    (one tuple per map) at each aspect ratio (height / width), centred on every cell, the
    stride the image's size over the map's, rounded down (torchvision's AnchorGenerator)."""
    anchors = []
    for feature, level_sizes in zip(features, sizes, strict=True):
        scales = torch.as_tensor(level_sizes, dtype=feature.dtype, device=feature.device)
        ratios = torch.as_tensor(aspect_ratios, dtype=feature.dtype, device=feature.device)
        h_ratios = ratios.sqrt()
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales[None, :]).view(-1)
        cell = (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()
        height, width = feature.shape[-2:]
        shifts_y = torch.arange(height, device=feature.device) * (image.shape[-2] // height)
        shifts_x = torch.arange(width, device=feature.device) * (image.shape[-1] // width)
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=-1).reshape(-1, 1, 4)
        anchors.append((shifts + cell).reshape(-1, 4))
    return anchors
'''


def level_sizes(op: str, sizes: tuple[int, ...], levels: int) -> tuple[tuple[int, ...], ...]:
    """The anchor sizes of each of `levels` feature maps: all of them on a single map, else
    one per map."""
    if levels == 1:
        return (tuple(sizes),)
    if len(sizes) != levels:
        raise SpecError(
            f"{op}: {len(sizes)} anchor sizes for {levels} feature maps",
            hint="give one size per feature map (sizes=[32, 64, 128, 256, 512] for an FPN's "
            "five levels), or use one map for several sizes",
        )
    return tuple((s,) for s in sizes)


def grid_shapes(op: str, image: TensorType, features: list[TensorType]) -> list[tuple[int, int]]:
    """Each feature map's (H, W), checked: known sizes that divide the image's."""
    expect_rank(op, image, (4,), " image (N, C, H, W)")
    shapes = []
    for i, f in enumerate(features):
        expect_rank(op, f, (4,), f" feature map {i} (N, C, H, W)")
        dims = (*image.shape[2:], *f.shape[2:])
        if not all(isinstance(d, int) for d in dims):
            raise SpecError(
                f"{op} needs known image and feature sizes, got the image {image} and the "
                f"feature map {f}",
                hint="declare the image's size: `input image: f32[N, 3, 800, 800]`",
            )
        h, w = f.shape[2], f.shape[3]
        assert isinstance(h, int) and isinstance(w, int)
        shapes.append((h, w))
    return shapes


def anchor_table(
    image: TensorType, shapes: list[tuple[int, int]], sizes: tuple, ratios: tuple[float, ...]
) -> list[np.ndarray]:
    """grid_anchors in NumPy float32, operation for operation: each level's (H * W * A, 4)."""
    out = []
    height, width = image.shape[2], image.shape[3]
    assert isinstance(height, int) and isinstance(width, int)
    r = np.asarray(ratios, np.float32)
    h_ratios = np.sqrt(r)
    w_ratios = np.float32(1) / h_ratios
    for (h, w), level in zip(shapes, sizes, strict=True):
        scales = np.asarray(level, np.float32)
        ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
        cell = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2))
        ys, xs = np.meshgrid(
            np.arange(h) * (height // h), np.arange(w) * (width // w), indexing="ij"
        )
        shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4).astype(np.float32)
        out.append((shifts + cell).reshape(-1, 4).astype(np.float32))
    return out


ANCHOR_ATTRS = (
    Attr("sizes", "ints", doc="anchor sizes in pixels: one per feature map, or all on one map"),
    Attr(
        "aspect_ratios", "floats", [0.5, 1.0, 2.0], "height / width of the anchors", positive=True
    ),
)


def anchor_attrs(op: str, a: dict[str, Any], levels: int) -> dict[str, Any]:
    sizes = a["sizes"] if isinstance(a["sizes"], tuple) else (a["sizes"],)
    if any(s <= 0 for s in sizes):
        raise SpecError(f"{op}: anchor sizes must be positive, got {list(sizes)}")
    level_sizes(op, sizes, levels)
    return {**a, "sizes": sizes}


@register
class Anchors(OpDef):
    name = "anchors"
    family = "detection"
    doc = (
        "Anchor boxes over feature maps (Faster R-CNN's reference boxes): for each map "
        "(N, C, H, W) after the image, H * W * A boxes (x1, y1, x2, y2), A = sizes per map x "
        "aspect ratios, centred on each cell at the stride the image's size over the map's; "
        "as torchvision's AnchorGenerator. One tensor (sum of H * W * A, 4) for all maps."
    )
    example = "a = anchors(image, p2, p3, sizes=[32, 64], aspect_ratios=[0.5, 1.0, 2.0])"
    inputs = ("image", "*features")
    attrs = ANCHOR_ATTRS
    torch_helpers = {"grid_anchors": GRID_ANCHORS}

    def resolve(self, ins, a):
        return anchor_attrs(self.name, a, len(ins) - 1)

    def infer(self, ins, a):
        shapes = grid_shapes(self.name, ins[0], ins[1:])
        sizes = level_sizes(self.name, a["sizes"], len(shapes))
        count = sum(
            h * w * len(s) * len(a["aspect_ratios"])
            for (h, w), s in zip(shapes, sizes, strict=True)
        )
        return TensorType("f32", (count, 4))

    def tables(self, ins, a):
        return {"anchors": self.infer(ins, a).shape}  # type: ignore[union-attr,dict-item]

    def torch_call(self, node, args, module):
        sizes = level_sizes(self.name, node.attrs["sizes"], len(args) - 1)
        ratios = tuple(node.attrs["aspect_ratios"])
        features = f"[{', '.join(args[1:])}]"
        return f"torch.cat(grid_anchors({args[0]}, {features}, {sizes!r}, {ratios}))"

    def onnx(self, node, b, ins, outs):
        types = [v.type for v in node.inputs]
        shapes = grid_shapes(self.name, types[0], types[1:])
        sizes = level_sizes(self.name, node.attrs["sizes"], len(shapes))
        table = np.concatenate(anchor_table(types[0], shapes, sizes, node.attrs["aspect_ratios"]))
        b.add(node, "Identity", [b.const(node, "anchors", table, "f32")], outs)
