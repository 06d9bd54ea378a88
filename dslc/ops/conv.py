"""Convolutions over 1, 2 or 3 spatial dims, input layout (N, C, *spatial)."""

from __future__ import annotations

import math
from typing import Any

from dslc.diagnostics import SpecError
from dslc.ir.graph import ParamSpec
from dslc.ir.types import Dim, TensorType, dim_add, dim_floordiv
from dslc.ops import pycode
from dslc.ops.base import (
    Attr,
    OpDef,
    expect_f32,
    expect_rank,
    known_channels,
    ntuple,
    register,
    weighted_macs,
)
from dslc.ops.dense import INIT_ATTRS
from dslc.ops.init import Init, from_attr


def window_out(
    size: Dim, k: int, s: int, p0: int, p1: int, d: int, op: str, ceil: bool = False
) -> Dim:
    """Output length of a sliding window: floor((L + p0 + p1 - d*(k-1) - 1) / s) + 1, or with
    `ceil` (pooling's ceil_mode) the ceiling."""
    span = d * (k - 1) + 1
    extra = s - 1 if ceil else 0
    out = dim_add(dim_floordiv(dim_add(size, p0 + p1 - span + extra), s), 1)
    # PyTorch drops a last window that would start in the end padding; ONNX keeps it. Refuse
    # the sizes where that happens rather than emit two models that disagree.
    starts_in_padding = (
        (out - 1) * s >= size + p0
        if isinstance(out, int) and isinstance(size, int)
        else p1 + extra >= span
    )
    if ceil and starts_in_padding:
        raise SpecError(
            f"{op}: with ceil_mode, padding {p1} and input size {size}, a last window would "
            "start in the padding, where PyTorch and ONNX disagree on the output size",
            hint="use less padding or ceil_mode=false",
        )
    if isinstance(out, int) and out < 1:
        raise SpecError(
            f"{op}: input size {size} is too small for a window of {span} "
            f"(padding {p0}+{p1}, stride {s}): the output would be empty"
        )
    return out


def output_spatial(op: str, x: TensorType, a: dict[str, Any], n: int) -> list[Dim]:
    """The n spatial output dims of a sliding window over x (N, C, *spatial), from the resolved
    kernel, stride, padding (begins, then ends), for convolutions dilation, and for pooling
    ceil_mode."""
    dilation = a.get("dilation", (1,) * n)
    return [
        window_out(
            x.shape[2 + i],
            a["kernel"][i],
            a["stride"][i],
            a["padding"][i],
            a["padding"][n + i],
            dilation[i],
            op,
            a.get("ceil_mode", False),
        )
        for i in range(n)
    ]


def same_pads(k: tuple[int, ...], d: tuple[int, ...]) -> tuple[int, ...]:
    """ONNX pads (all begins, then all ends) for padding="same"; the extra one goes at the end,
    as in PyTorch."""
    total = [di * (ki - 1) for ki, di in zip(k, d, strict=True)]
    return tuple(t // 2 for t in total) + tuple(t - t // 2 for t in total)


def resolve_window(op: str, n: int, a: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Expand kernel/stride/dilation/padding to n-tuples; padding becomes (begins..., ends...)."""
    a = dict(a)
    for key in names:
        a[key] = ntuple(a[key], n, op, key)
    pad = a["padding"]
    if pad == "same":
        if any(s != 1 for s in a["stride"]):
            raise SpecError(f'{op}: padding="same" needs stride 1', hint="give explicit padding")
        a["padding"] = same_pads(a["kernel"], a.get("dilation", (1,) * n))
        a["same"] = True
    else:
        half = (0,) * n if pad == "valid" else ntuple(pad, n, op, "padding")
        a["padding"] = half + half
    return a


class ConvNd(OpDef):
    dims: int
    family = "conv"
    prefix = "conv"
    affine_axis = 0
    module = True
    attrs = (
        Attr("out_channels", "int", doc="number of filters", positive=True),
        Attr("kernel", "ints", doc="kernel size, one int or one per spatial dim", positive=True),
        Attr("stride", "ints", 1, "step between windows", positive=True),
        Attr("padding", "padding", 0, 'zero padding per side, or "same" / "valid"', minimum=0),
        Attr("dilation", "ints", 1, "spacing between kernel taps", positive=True),
        Attr("groups", "int", 1, "grouped convolution: channels split into groups", positive=True),
        Attr("bias", "bool", True, "learn an additive bias per filter"),
        Attr("in_channels", "int", None, "expected input channels; checked, inferred when omitted"),
        *INIT_ATTRS,
    )

    def resolve(self, ins, a):
        expect_rank(self.name, ins[0], (self.dims + 2,), " (N, C, *spatial)")
        a = resolve_window(self.name, self.dims, a, ("kernel", "stride", "dilation"))
        a.setdefault("same", False)  # torch emits padding="same" where the spec said so
        return a

    def made_dims(self, node):
        return (1,)

    def positions(self, node, flow):
        return flow.mixes(node, range(1, node.inputs[0].type.rank))  # channels and space

    def infer(self, ins, a):
        (x,) = ins
        expect_f32(self.name, x)
        c = known_channels(self.name, x)
        if a["in_channels"] is not None and a["in_channels"] != c:
            raise SpecError(
                f"{self.name} expects {a['in_channels']} input channels, got {c} (input {x})"
            )
        g = a["groups"]
        if c % g or a["out_channels"] % g:
            raise SpecError(
                f"{self.name}: groups={g} must divide the input ({c}) "
                f"and output ({a['out_channels']}) channels"
            )
        spatial = output_spatial(self.name, x, a, self.dims)
        return x.with_shape((x.shape[0], a["out_channels"], *spatial))

    def params(self, ins, a):
        c = ins[0].shape[1]
        w_shape = (a["out_channels"], c // a["groups"], *a["kernel"])
        p = {"weight": ParamSpec(w_shape, from_attr(a["init"], Init("uniform_fan_in")))}
        if a["bias"]:
            fan_in = math.prod(w_shape[1:])
            bias_default = Init("uniform_fan_in", fan_in=fan_in)
            p["bias"] = ParamSpec(
                (a["out_channels"],), from_attr(a["bias_init"], bias_default, vector=True)
            )
        return p

    def macs(self, node):
        a = node.attrs
        taps = node.inputs[0].type.shape[1] // a["groups"] * math.prod(a["kernel"])
        return weighted_macs(node.output.type, taps)

    def torch_module(self, node):
        a, n = node.attrs, self.dims
        padding = "same" if a["same"] else pycode.compact(a["padding"][:n])
        return pycode.ctor(
            f"nn.Conv{n}d",
            pycode.dim(node, 0, 1, attr="in_channels"),
            pycode.attr(node, "out_channels"),
            kernel_size=pycode.attr(node, "kernel", pycode.compact(a["kernel"])),
            stride=pycode.attr(node, "stride", pycode.compact(a["stride"]), default=1),
            padding=pycode.attr(node, "padding", padding, default=0),
            dilation=pycode.attr(node, "dilation", pycode.compact(a["dilation"]), default=1),
            groups=pycode.attr(node, "groups", default=1),
            bias=pycode.attr(node, "bias", default=True),
        )

    def onnx(self, node, b, ins, outs):
        a = node.attrs
        weights = [b.param(node, "weight")] + ([b.param(node, "bias")] if a["bias"] else [])
        b.add(
            node,
            "Conv",
            [ins[0], *weights],
            outs,
            kernel_shape=list(a["kernel"]),
            strides=list(a["stride"]),
            pads=list(a["padding"]),
            dilations=list(a["dilation"]),
            group=a["groups"],
        )


for _n in (1, 2, 3):
    register(
        type(
            f"Conv{_n}d",
            (ConvNd,),
            {
                "name": f"conv{_n}d",
                "dims": _n,
                "doc": f"{_n}-D convolution over (N, C, {', '.join('DHW'[3 - _n :])}) "
                f"(torch.nn.Conv{_n}d).",
                "example": [
                    "x -> conv1d(16, 3)",
                    "x -> conv2d(6, 5)",
                    'x -> conv3d(8, 3, padding="same")',
                ][_n - 1],
            },
        )
    )
