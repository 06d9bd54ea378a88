"""Transposed convolutions over 1, 2 or 3 spatial dims, input layout (N, C, *spatial): the
upsampling half of autoencoders, U-Nets and GAN generators."""

from __future__ import annotations

import math
from typing import Any

from dslc.diagnostics import SpecError
from dslc.ir.graph import ParamSpec
from dslc.ir.types import Dim, dim_add, dim_mul
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

WINDOW = ("kernel", "stride", "padding", "output_padding", "dilation")


def transposed_out(size: Dim, k: int, s: int, p: int, op: int, d: int) -> Dim:
    """(L - 1)*s - 2p + d*(k - 1) + output_padding + 1, as PyTorch and ONNX compute it."""
    return dim_add(dim_mul(dim_add(size, -1), s), d * (k - 1) + op + 1 - 2 * p)


def listing(values: range) -> str:
    """only 13 | 13 or 14 | 13, 14 or 15 | any size from 13 to 2000000012. A range, never a
    list: with stride 2e9 there are 2e9 sizes, which a list would hold in 60 GB."""
    if len(values) > 4:
        return f"any size from {values[0]} to {values[-1]}"
    words = list(map(str, values))
    return f"only {words[0]}" if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


class ConvTransposeNd(OpDef):
    dims: int
    family = "conv"
    prefix = "deconv"
    module = True
    affine_axis = 1  # weight (C_in, C_out / groups, *k): folding needs groups == 1
    attrs = (
        Attr("out_channels", "int", doc="number of output channels", positive=True),
        Attr("kernel", "ints", doc="kernel size, one int or one per spatial dim", positive=True),
        Attr("stride", "ints", 1, "upsampling factor: step between input positions", positive=True),
        Attr("padding", "ints", 0, "removed from each side of the output", minimum=0),
        Attr(
            "output_padding",
            "ints",
            0,
            "added to one side of the output; less than max(stride, dilation)",
            minimum=0,
        ),
        Attr("dilation", "ints", 1, "spacing between kernel taps", positive=True),
        Attr("groups", "int", 1, "grouped convolution: channels split into groups", positive=True),
        Attr("bias", "bool", True, "learn an additive bias per output channel"),
        *INIT_ATTRS,
        Attr(
            "output_size",
            "ints",
            None,
            "wanted output spatial size; sets output_padding (or says which sizes are possible)",
            positive=True,
        ),
    )

    def resolve(self, ins, a):
        x = ins[0]
        expect_rank(self.name, x, (self.dims + 2,), " (N, C, *spatial)")
        a = dict(a) | {key: ntuple(a[key], self.dims, self.name, key) for key in WINDOW}
        if a["output_size"] is not None:
            if any(a["output_padding"]):
                raise SpecError(
                    f"{self.name}: give output_size or output_padding, not both",
                    hint="output_size sets output_padding",
                )
            a["output_size"] = ntuple(a["output_size"], self.dims, self.name, "output_size")
            a["output_padding"] = self._padding_for(x.shape[2:], a)
        return a

    def _padding_for(self, sizes: tuple[Dim, ...], a: dict[str, Any]) -> tuple[int, ...]:
        """The output_padding per axis that gives output_size, or an error naming the sizes
        that are possible."""
        pads = []
        for i, (size, want) in enumerate(zip(sizes, a["output_size"], strict=True)):
            if not isinstance(size, int):
                raise SpecError(f"{self.name}: output_size needs known spatial sizes, got {size}")
            k, s, p, d = (a[key][i] for key in ("kernel", "stride", "padding", "dilation"))
            base = transposed_out(size, k, s, p, 0, d)
            assert isinstance(base, int)  # known size in, known size out
            extra = max(s, d)
            if not base <= want < base + extra:
                raise self._unreachable(want, size, (k, s, p, d), range(base, base + extra))
            pads.append(want - base)
        return tuple(pads)

    def _unreachable(self, want: int, size: int, ksdp: tuple[int, ...], sizes: range) -> SpecError:
        k, s, p, d = ksdp
        dil = f", dilation {d}" if d != 1 else ""
        possible = range(max(sizes.start, 1), max(sizes.stop, 1))
        return SpecError(
            f"{self.name} cannot produce {want} from {size} with kernel {k}, stride {s}, "
            f"padding {p}{dil}: "
            + (f"it can produce {listing(possible)}" if possible else "its output is empty"),
            hint=f"one layer with stride {s} scales the size by about {s}: chain layers, or "
            "change the stride"
            if want > sizes.start
            else None,
        )

    def made_dims(self, node):
        return (1,)

    def positions(self, node, flow):
        return flow.mixes(node, range(1, node.inputs[0].type.rank))  # channels and space

    def infer(self, ins, a):
        (x,) = ins
        expect_f32(self.name, x)
        c, g = known_channels(self.name, x), a["groups"]
        if c % g or a["out_channels"] % g:
            raise SpecError(
                f"{self.name}: groups={g} must divide the input ({c}) "
                f"and output ({a['out_channels']}) channels"
            )
        spatial = [self._axis(x.shape[2 + i], i, a) for i in range(self.dims)]
        return x.with_shape((x.shape[0], a["out_channels"], *spatial))

    def _axis(self, size: Dim, i: int, a: dict[str, Any]) -> Dim:
        k, s, p, op, d = (a[key][i] for key in WINDOW)
        if op >= max(s, d):
            raise SpecError(
                f"{self.name}: output_padding {op} must be smaller than the stride ({s}) "
                f"or the dilation ({d})",
                hint="PyTorch refuses it too; use padding, or a larger stride",
            )
        out = transposed_out(size, k, s, p, op, d)
        if isinstance(out, int) and out < 1:
            raise SpecError(
                f"{self.name}: input size {size} with padding {p} gives an empty output"
            )
        return out

    def params(self, ins, a):
        c, g = ins[0].shape[1], a["groups"]
        w_shape = (c, a["out_channels"] // g, *a["kernel"])
        p = {"weight": ParamSpec(w_shape, from_attr(a["init"], Init("uniform_fan_in")))}
        if a["bias"]:
            # PyTorch's fan_in of a transposed weight is its dim 1 times the kernel: Cout/g * k
            bias_default = Init("uniform_fan_in", fan_in=math.prod(w_shape[1:]))
            p["bias"] = ParamSpec(
                (a["out_channels"],), from_attr(a["bias_init"], bias_default, vector=True)
            )
        return p

    def macs(self, node):
        # every input element is multiplied into Cout/g * k output positions
        a = node.attrs
        taps = a["out_channels"] // a["groups"] * math.prod(a["kernel"])
        return weighted_macs(node.inputs[0].type, taps)

    def torch_module(self, node):
        a = node.attrs

        def window(key: str, default: int) -> pycode.Arg:
            return pycode.attr(node, key, pycode.compact(a[key]), default=default)

        return pycode.ctor(
            f"nn.ConvTranspose{self.dims}d",
            pycode.dim(node, 0, 1),
            pycode.attr(node, "out_channels"),
            kernel_size=window("kernel", -1),
            stride=window("stride", 1),
            padding=window("padding", 0),
            output_padding=window("output_padding", 0),
            groups=pycode.attr(node, "groups", default=1),
            bias=pycode.attr(node, "bias", default=True),
            dilation=window("dilation", 1),
        )

    def onnx(self, node, b, ins, outs):
        a = node.attrs
        weights = [b.param(node, "weight")] + ([b.param(node, "bias")] if a["bias"] else [])
        b.add(
            node,
            "ConvTranspose",
            [ins[0], *weights],
            outs,
            kernel_shape=list(a["kernel"]),
            strides=list(a["stride"]),
            pads=list(a["padding"]) * 2,
            output_padding=list(a["output_padding"]),
            dilations=list(a["dilation"]),
            group=a["groups"],
        )


for _n in (1, 2, 3):
    register(
        type(
            f"ConvTranspose{_n}d",
            (ConvTransposeNd,),
            {
                "name": f"conv_transpose{_n}d",
                "dims": _n,
                "doc": f"{_n}-D transposed convolution over (N, C, {', '.join('DHW'[3 - _n :])}) "
                f"(torch.nn.ConvTranspose{_n}d); output size (L-1)*stride - 2*padding "
                "+ dilation*(kernel-1) + output_padding + 1.",
                "example": [
                    "x -> conv_transpose1d(16, 4, stride=2, padding=1)",
                    "x -> conv_transpose2d(32, 3, stride=2, padding=1, output_size=28)",
                    "x -> conv_transpose3d(8, 2, stride=2)",
                ][_n - 1],
            },
        )
    )
