"""Pooling over 1, 2 or 3 spatial dims, input layout (N, C, *spatial)."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ops.base import Attr, OpDef, expect_float, expect_rank, register
from dslc.ops.conv import compact, output_spatial, resolve_window


class PoolNd(OpDef):
    dims: int
    kind: str  # "max" | "avg"
    family = "pool"
    prefix = "pool"

    def resolve(self, ins, a):
        expect_rank(self.name, ins[0], (self.dims + 2,), " (N, C, *spatial)")
        if a["padding"] == "same":
            raise SpecError(
                f'{self.name}: padding="same" is not supported for pooling',
                hint="give explicit padding",
            )
        a = dict(a, stride=a["kernel"] if a["stride"] is None else a["stride"], dilation=1)
        a = resolve_window(self.name, self.dims, a, ("kernel", "stride", "dilation"))
        del a["dilation"]
        if any(2 * p > k for p, k in zip(a["padding"], a["kernel"] * 2, strict=True)):
            raise SpecError(f"{self.name}: padding must be at most half the kernel size")
        return a

    def infer(self, ins, a):
        (x,) = ins
        expect_float(self.name, x)
        spatial = output_spatial(self.name, x, a, self.dims)
        return x.with_shape((*x.shape[:2], *spatial))

    def torch_call(self, node, args, module):
        a, n = node.attrs, self.dims
        parts = [args[0], compact(a["kernel"])]
        if a["stride"] != a["kernel"]:
            parts.append(f"stride={compact(a['stride'])}")
        if any(a["padding"]):
            parts.append(f"padding={compact(a['padding'][:n])}")
        if a["ceil_mode"]:
            parts.append("ceil_mode=True")
        return f"F.{self.kind}_pool{n}d({', '.join(parts)})"

    def onnx(self, node, b, ins, outs):
        a = node.attrs
        extra = {"count_include_pad": 1} if self.kind == "avg" else {}
        if a["ceil_mode"]:
            extra["ceil_mode"] = 1
        b.add(
            node,
            "MaxPool" if self.kind == "max" else "AveragePool",
            ins,
            outs,
            kernel_shape=list(a["kernel"]),
            strides=list(a["stride"]),
            pads=list(a["padding"]),
            **extra,
        )


_POOL_ATTRS = (
    Attr("kernel", "ints", doc="window size", positive=True),
    Attr(
        "stride", "ints", None, "step between windows; defaults to the kernel size", positive=True
    ),
    Attr("padding", "padding", 0, "padding per side (max: -inf, avg: zeros, counted)", minimum=0),
    Attr("ceil_mode", "bool", False, "round the output size up (a last, partial window)"),
)

for _kind, _what in (("max", "Maximum"), ("avg", "Average")):
    for _n in (1, 2, 3):
        register(
            type(
                f"{_kind.title()}Pool{_n}d",
                (PoolNd,),
                {
                    "name": f"{_kind}_pool{_n}d",
                    "dims": _n,
                    "kind": _kind,
                    "attrs": _POOL_ATTRS,
                    "doc": f"{_what} over windows of {_n} spatial dim{'s' if _n > 1 else ''} "
                    f"(torch F.{_kind}_pool{_n}d).",
                    "example": f"x -> {_kind}_pool{_n}d(2)",
                },
            )
        )


@register
class GlobalAvgPool(OpDef):
    name = "global_avg_pool"
    family = "pool"
    prefix = "gap"
    doc = "Mean over all spatial dims: (N, C, *spatial) -> (N, C), as Keras' GlobalAveragePooling."
    example = "x -> global_avg_pool"

    def infer(self, ins, a):
        (x,) = ins
        expect_float(self.name, x)
        expect_rank(self.name, x, (3, 4, 5), " (N, C, *spatial)")
        return x.with_shape(x.shape[:2])

    def torch_call(self, node, args, module):
        dims = tuple(range(2, node.inputs[0].type.rank))
        return f"{args[0]}.mean(dim={dims if len(dims) > 1 else dims[0]})"

    def onnx(self, node, b, ins, outs):
        pooled = b.add(node, "GlobalAveragePool", ins, [b.temp(node, "pooled")])
        b.add(node, "Flatten", [pooled], outs, axis=1)
