"""Changing the spatial size of (N, C, *spatial) without learned weights: upsampling by
interpolation, and padding."""

from __future__ import annotations

from typing import Any

import numpy as np

from dslc.diagnostics import SpecError
from dslc.ir.types import dim_add, dim_mul
from dslc.ops.base import Attr, OpDef, expect_float, expect_rank, ntuple, register
from dslc.ops.pycode import compact, py

# mode -> the input rank it needs (None: any); PyTorch ties each linear mode to one rank
MODES = {"nearest": None, "linear": 3, "bilinear": 4, "trilinear": 5}


def nearest_indices(size: int, out: int) -> np.ndarray:
    """The input index PyTorch's "nearest" reads for each output index, with its float32
    arithmetic: floor(i * (size / out)), at most size - 1. ONNX Resize divides by out / size
    instead, which rounds the other way at some boundaries, so sized nearest resizing is a
    Gather with these indices."""
    scale = np.float32(size) / np.float32(out)
    index = np.floor(np.arange(out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(index, size - 1)


@register
class Upsample(OpDef):
    name = "upsample"
    family = "pool"
    prefix = "up"
    doc = (
        "Resizes the spatial dims by `scale_factor`, to `size`, or to the spatial size of "
        "the tensor `like` (an FPN's top-down path: `top -> upsample(like=lateral)`), by "
        "nearest-neighbour or (bi/tri)linear interpolation (torch F.interpolate; ONNX Resize "
        "with the coordinate mapping PyTorch uses)."
    )
    example = 'x -> upsample(2, mode="bilinear")'
    inputs = ("x", "like?")
    attrs = (
        Attr(
            "scale_factor",
            "int",
            None,
            "integer multiplier of every spatial size; for other ratios give size",
            positive=True,
        ),
        Attr(
            "size",
            "ints",
            None,
            "output spatial size instead, one int or one per dim",
            positive=True,
        ),
        Attr(
            "mode",
            "str",
            "nearest",
            "nearest, or linear / bilinear / trilinear for 1 / 2 / 3 spatial dims",
            choices=tuple(MODES),
        ),
        Attr("align_corners", "bool", False, "linear modes: map corner pixels onto corner pixels"),
    )

    def resolve(self, ins, a):
        x, mode = ins[0], a["mode"]
        expect_rank(self.name, x, (3, 4, 5), " (N, C, *spatial)")
        given = [a["scale_factor"] is not None, a["size"] is not None, len(ins) > 1]
        if sum(given) != 1:
            raise SpecError("upsample takes one of scale_factor, size and like")
        if len(ins) > 1 and ins[1].rank != x.rank:
            raise SpecError(
                f"upsample: like must have the rank of the input, {x.rank}, got {ins[1]}",
                hint="like= gives the spatial size to resize to: a tensor (N, C, *spatial)",
            )
        if MODES[mode] not in (None, x.rank):
            fit = next(m for m, r in MODES.items() if r == x.rank)
            raise SpecError(
                f'upsample: mode "{mode}" is for rank-{MODES[mode]} inputs, got {x}',
                hint=f'use "{fit}" for {x.rank - 2} spatial dim{"s" if x.rank > 3 else ""}',
            )
        if a["align_corners"] and mode == "nearest":
            raise SpecError('upsample: align_corners is for the linear modes, not "nearest"')
        if a["size"] is not None:
            a = dict(a, size=ntuple(a["size"], x.rank - 2, self.name, "size"))
        return a

    def infer(self, ins, a):
        x = ins[0]
        expect_float(self.name, x)
        if a["scale_factor"] is not None:
            return x.with_shape(
                (*x.shape[:2], *(dim_mul(d, a["scale_factor"]) for d in x.shape[2:]))
            )
        size = _target(ins, a)
        known = all(isinstance(d, int) for d in (*x.shape[2:], *size))
        if a["mode"] == "nearest" and not known:
            raise SpecError(
                f"upsample to a size in mode nearest needs known spatial sizes, got {x}"
                + (f" to the size of {ins[1]}" if len(ins) > 1 else ""),
                hint="give scale_factor, or a linear mode",
            )
        return x.with_shape((*x.shape[:2], *size))

    def torch_call(self, node, args, module):
        a = node.attrs
        if len(args) > 1:  # the spatial dims of `like`, as torchvision's FPN reads them
            how = f"size={args[1]}.shape[{2 - node.inputs[0].type.rank}:]"
        elif a["size"] is not None:
            how = f"size={py(compact(a['size']))}"
        else:
            how = f"scale_factor={a['scale_factor']}"
        corners = f", align_corners={a['align_corners']}" if a["mode"] != "nearest" else ""
        return f'F.interpolate({args[0]}, {how}, mode="{a["mode"]}"{corners})'

    def onnx(self, node, b, ins, outs):
        a, rank = node.attrs, node.inputs[0].type.rank
        sized = a["scale_factor"] is None
        if sized and a["mode"] == "nearest":
            self._gather(node, b, ins[0], outs[0])
            return
        axes = list(range(2, rank))  # Resize's `axes`: only the spatial dims are given
        if len(ins) > 1:
            sizes = b.add(node, "Shape", [ins[1]], [b.temp(node, "sizes")], start=2)
            inputs = [ins[0], "", "", sizes]
        elif sized:
            inputs = [ins[0], "", "", b.const(node, "sizes", list(a["size"]), "i64")]
        else:
            scales = [float(a["scale_factor"])] * len(axes)
            inputs = [ins[0], "", b.const(node, "scales", scales, "f32")]
        b.add(node, "Resize", inputs, outs, axes=axes, **self._resize_attrs(a))

    def _gather(self, node, b, x: str, y: str) -> None:
        sizes, out = node.inputs[0].type.shape[2:], node.outputs[0].type.shape[2:]
        axes = [i for i in range(len(out)) if sizes[i] != out[i]]
        if not axes:
            b.alias(y, x)
        for k, i in enumerate(axes):
            index = b.const(node, f"index{2 + i}", nearest_indices(int(sizes[i]), out[i]), "i64")
            target = y if k == len(axes) - 1 else b.temp(node, f"axis{2 + i}")
            x = b.add(node, "Gather", [x, index], [target], axis=2 + i)

    def _resize_attrs(self, a: dict[str, Any]) -> dict[str, Any]:
        """PyTorch's coordinate mapping: nearest takes floor(out_index / scale) (asymmetric,
        floor); linear maps pixel centres (half_pixel) or corners (align_corners)."""
        if a["mode"] == "nearest":
            return {
                "mode": "nearest",
                "coordinate_transformation_mode": "asymmetric",
                "nearest_mode": "floor",
            }
        corners = "align_corners" if a["align_corners"] else "half_pixel"
        return {"mode": "linear", "coordinate_transformation_mode": corners}


def _target(ins, a) -> tuple:
    """The spatial size a sized upsample resizes to: `size`, or the spatial dims of `like`."""
    return tuple(ins[1].shape[2:]) if len(ins) > 1 else a["size"]


@register
class Pad(OpDef):
    name = "pad"
    family = "shape"
    doc = (
        "Pads the spatial dims of (N, C, *spatial) with a constant, their reflection or their "
        "edge values (torch F.pad; ONNX Pad). `padding` is one int for every side, one per "
        "spatial dim (both sides), or [before, after] per spatial dim in order: "
        "[top, bottom, left, right] for an image."
    )
    example = "x -> pad([0, 1, 0, 1])"
    attrs = (
        Attr("padding", "ints", doc="int, one per spatial dim, or two per spatial dim", minimum=0),
        Attr("value", "float", 0.0, 'the fill value of mode "constant"'),
        Attr(
            "mode",
            "str",
            "constant",
            "constant, reflect (mirror without the edge) or replicate (repeat the edge)",
            choices=("constant", "reflect", "replicate"),
        ),
    )

    def resolve(self, ins, a):
        x = ins[0]
        expect_rank(self.name, x, (3, 4, 5), " (N, C, *spatial)")
        n, pad = x.rank - 2, a["padding"]
        if a["value"] != 0.0 and a["mode"] != "constant":
            raise SpecError(f'pad: value is for mode "constant", not "{a["mode"]}"')
        if isinstance(pad, int) or len(pad) == n:
            each = ntuple(pad, n, self.name, "padding")
            return dict(a, padding=tuple(p for e in each for p in (e, e)))
        if len(pad) != 2 * n:
            raise SpecError(
                f"pad: padding has {len(pad)} values; the input has {n} spatial dims, so give "
                f"1, {n} or {2 * n} ([before, after] per spatial dim)"
            )
        return a

    def infer(self, ins, a):
        (x,) = ins
        pads = a["padding"]
        spatial = []
        for i, d in enumerate(x.shape[2:]):
            before, after = pads[2 * i], pads[2 * i + 1]
            if a["mode"] == "reflect" and isinstance(d, int) and max(before, after) >= d:
                raise SpecError(f"pad: reflect padding must be smaller than the dim it pads, {d}")
            spatial.append(dim_add(d, before + after))
        return x.with_shape((*x.shape[:2], *spatial))

    def torch_call(self, node, args, module):
        a, pads = node.attrs, node.attrs["padding"]
        # F.pad lists (before, after) pairs from the last dim backwards
        order = [p for i in reversed(range(len(pads) // 2)) for p in pads[2 * i : 2 * i + 2]]
        extra = f', mode="{a["mode"]}"' if a["mode"] != "constant" else ""
        extra += f", value={a['value']!r}" if a["value"] != 0.0 else ""
        return f"F.pad({args[0]}, {tuple(order)}{extra})"

    def onnx(self, node, b, ins, outs):
        a, pads = node.attrs, node.attrs["padding"]
        onnx_pads = [0, 0, *pads[0::2], 0, 0, *pads[1::2]]  # all begins, then all ends
        inputs = [ins[0], b.const(node, "pads", onnx_pads, "i64")]
        if a["mode"] == "constant":
            inputs.append(b.const(node, "value", a["value"], node.inputs[0].type.dtype))
        mode = {"replicate": "edge"}.get(a["mode"], a["mode"])
        b.add(node, "Pad", inputs, outs, mode=mode)
