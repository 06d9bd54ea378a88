"""Activations that clip to a range: relu6, hardtanh and clamp; ONNX Clip with the bounds as
constant inputs."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ops.activation import Activation
from dslc.ops.base import Attr, register
from dslc.ops.pycode import attr, ctor


class Clipped(Activation):
    bounds: tuple[str | None, str | None] = (None, None)  # attributes of the low and high end

    def limits(self, a) -> tuple[float | None, float | None]:
        low, high = self.bounds
        return (a[low] if low else None), (a[high] if high else None)

    def resolve(self, ins, a):
        low, high = self.limits(a)
        if low is not None and high is not None and low > high:
            raise SpecError(f"{self.name}: {self.bounds[0]} {low} is above {self.bounds[1]} {high}")
        return a

    def onnx(self, node, b, ins, outs):
        dtype = node.inputs[0].type.dtype
        low, high = self.limits(node.attrs)
        ends = [
            b.const(node, key, v, dtype) if v is not None else ""
            for key, v in (("min", low), ("max", high))
        ]
        while ends and ends[-1] == "":
            ends.pop()
        b.add(node, "Clip", [ins[0], *ends], outs)


@register
class Relu6(Clipped):
    name = "relu6"
    doc = "min(max(x, 0), 6) (MobileNet's; torch.nn.ReLU6)."
    example = "x -> relu6"
    function, layer = "F.relu6", "nn.ReLU6"

    def limits(self, a):
        return 0.0, 6.0


@register
class Hardtanh(Clipped):
    name = "hardtanh"
    doc = "x clipped to [min_val, max_val] (torch.nn.Hardtanh)."
    example = "x -> hardtanh(-2.0, 2.0)"
    function, layer = "F.hardtanh", "nn.Hardtanh"
    attrs = (
        Attr("min_val", "float", -1.0, "the lower end"),
        Attr("max_val", "float", 1.0, "the upper end"),
    )
    bounds = ("min_val", "max_val")


@register
class Clamp(Clipped):
    name = "clamp"
    doc = "x clipped to [min, max]; either end may be left unset (torch.clamp)."
    example = "x -> clamp(min=0.0)"
    function, layer = "torch.clamp", ""
    attrs = (
        Attr("min", "float", None, "the lower end; unset: none"),
        Attr("max", "float", None, "the upper end; unset: none"),
    )
    bounds = ("min", "max")

    def resolve(self, ins, a):
        if a["min"] is None and a["max"] is None:
            raise SpecError("clamp needs min, max or both", hint="x -> clamp(min=0.0, max=6.0)")
        return super().resolve(ins, a)

    def torch_layer(self, node):
        """nn.Hardtanh is clamp with both ends; torch has no module for one end."""
        a = node.attrs
        if a["min"] is None or a["max"] is None:
            return None
        return ctor("nn.Hardtanh", attr(node, "min"), attr(node, "max"))

    def torch_call(self, node, args, module):
        kw = [f"{k}={node.attrs[k]!r}" for k in ("min", "max") if node.attrs[k] is not None]
        return f"torch.clamp({', '.join([args[0], *kw])})"
