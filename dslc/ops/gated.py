"""Activations with more than one input per output or a learned slope: glu, which gates one
half of a dim by the sigmoid of the other, and prelu."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ir.graph import ParamSpec
from dslc.ops.activation import Activation
from dslc.ops.base import Attr, expect_f32, known_channels, norm_axis, register
from dslc.ops.init import Init
from dslc.ops.pycode import ctor, lit


@register
class Glu(Activation):
    name = "glu"
    doc = "a * sigmoid(b), a and b the two halves of `dim` (torch.nn.GLU); the dim halves."
    example = "x -> glu(dim=-1)"
    function, layer = "F.glu", "nn.GLU"
    attrs = (Attr("dim", "int", -1, "the dim to halve; its size must be known and even"),)

    def resolve(self, ins, a):
        return {"dim": norm_axis(self.name, a["dim"], ins[0].rank)}

    def infer(self, ins, a):
        (x,) = ins
        size = x.shape[a["dim"]]
        if not isinstance(size, int) or size % 2:
            raise SpecError(f"glu: dim {a['dim']} of {x} must have a known, even size")
        return x.with_shape((*x.shape[: a["dim"]], size // 2, *x.shape[a["dim"] + 1 :]))

    def torch_layer(self, node):
        return ctor(self.layer, dim=lit(node.attrs["dim"], default=-1 % node.inputs[0].type.rank))

    def positions(self, node, flow):
        return flow.mixes(node, (node.attrs["dim"],))

    def onnx(self, node, b, ins, outs):
        first, second = b.temp(node, "first"), b.temp(node, "second")
        b.add(node, "Split", ins, [first, second], axis=node.attrs["dim"], num_outputs=2)
        gate = b.add(node, "Sigmoid", [second], [b.temp(node, "gate")])
        b.add(node, "Mul", [first, gate], outs)


@register
class Prelu(Activation):
    name = "prelu"
    doc = (
        "x for x > 0, a * x otherwise, with the slope a learned: one for all channels, or one "
        "per channel (dim 1); it starts at 0.25, as torch.nn.PReLU's."
    )
    example = "x -> prelu(per_channel=true)"
    module = True
    prefix = "prelu"
    function, layer = "", "nn.PReLU"
    attrs = (Attr("per_channel", "bool", False, "a slope per channel of dim 1, else one"),)

    def infer(self, ins, a):
        expect_f32(self.name, ins[0])
        if a["per_channel"]:
            known_channels(self.name, ins[0])
        return ins[0]

    def params(self, ins, a):
        n = ins[0].shape[1] if a["per_channel"] else 1
        return {"weight": ParamSpec((n,), Init("torch_prelu"))}

    def torch_module(self, node):
        n = node.params["weight"].shape[0] if node.params else 1
        return ctor(self.layer, num_parameters=lit(n, default=1))

    def torch_layer(self, node):
        return self.torch_module(node)

    def torch_call(self, node, args, module):
        return f"{module}({args[0]})"

    def onnx(self, node, b, ins, outs):
        slope, rank = b.param(node, "weight"), node.inputs[0].type.rank
        if node.attrs["per_channel"] and rank > 2:  # (C,) -> (C, 1, ...) to meet dim 1
            axes = b.const(node, "axes", list(range(1, rank - 1)), "i64")
            slope = b.add(node, "Unsqueeze", [slope, axes], [b.temp(node, "slope")])
        b.add(node, "PRelu", [ins[0], slope], outs)
