"""Elementwise nonlinearities and (log-)softmax. The simple ones are rows of one table."""

from __future__ import annotations

import math
from typing import Any

from dslc.diagnostics import SpecError
from dslc.ops.base import Attr, OpDef, expect_float, register
from dslc.ops.pycode import attr, ctor


class Activation(OpDef):
    family = "activation"
    torch_fmt: str  # format string over x and the attributes
    onnx_op: str

    def infer(self, ins, a):
        expect_float(self.name, ins[0])
        return ins[0]

    layer: str = ""  # the nn.Module form: nn.ReLU

    def torch_call(self, node, args, module):
        return self.torch_fmt.format(x=args[0], **node.attrs)

    def torch_layer(self, node):
        return ctor(self.layer, *(attr(node, a.name) for a in self.attrs)) if self.layer else None

    def onnx_attrs(self, a: dict[str, Any]) -> dict[str, Any]:
        return {}

    def onnx(self, node, b, ins, outs):
        b.add(node, self.onnx_op, ins, outs, **self.onnx_attrs(node.attrs))


def activation(
    name: str,
    doc: str,
    torch_fmt: str,
    onnx_op: str,
    layer: str,
    attrs: tuple[Attr, ...] = (),
    onnx_attrs=None,
    example: str = "",
) -> None:
    body: dict[str, Any] = {
        "name": name,
        "layer": layer,
        "doc": doc,
        "torch_fmt": torch_fmt,
        "onnx_op": onnx_op,
        "attrs": attrs,
        "example": example or f"x -> {name}",
    }
    if onnx_attrs:
        body["onnx_attrs"] = lambda self, a: onnx_attrs(a)
    register(type(name.title().replace("_", ""), (Activation,), body))


activation("relu", "max(x, 0).", "torch.relu({x})", "Relu", "nn.ReLU")
activation("sigmoid", "1 / (1 + exp(-x)).", "torch.sigmoid({x})", "Sigmoid", "nn.Sigmoid")
activation("tanh", "Hyperbolic tangent.", "torch.tanh({x})", "Tanh", "nn.Tanh")
activation(
    "leaky_relu",
    "x for x > 0, negative_slope * x otherwise.",
    "F.leaky_relu({x}, {negative_slope!r})",
    "LeakyRelu",
    "nn.LeakyReLU",
    (Attr("negative_slope", "float", 0.01, "slope for x < 0"),),
    onnx_attrs=lambda a: {"alpha": a["negative_slope"]},
    example="x -> leaky_relu(0.2)",
)


@register
class Gelu(Activation):
    name = "gelu"
    doc = "Gaussian error linear unit, exact (erf) or its tanh approximation."
    example = "x -> gelu"
    attrs = (Attr("approximate", "str", "none", "none (erf) or tanh", choices=("none", "tanh")),)
    onnx_op = "Gelu"

    def torch_layer(self, node):
        return ctor("nn.GELU", approximate=attr(node, "approximate", default="none"))

    def torch_call(self, node, args, module):
        approx = node.attrs["approximate"]
        return (
            f"F.gelu({args[0]})"
            if approx == "none"
            else f'F.gelu({args[0]}, approximate="{approx}")'
        )

    def onnx_attrs(self, a):
        return {"approximate": a["approximate"]}

    def onnx(self, node, b, ins, outs):
        if b.fused:
            super().onnx(node, b, ins, outs)
        elif node.attrs["approximate"] == "none":  # x/2 (1 + erf(x / sqrt 2))
            scaled = b.add(
                node,
                "Mul",
                [ins[0], b.const(node, "rsqrt2", 0.5**0.5, "f32")],
                [b.temp(node, "scaled")],
            )
            _half_x_times_one_plus(
                node, b, ins[0], b.add(node, "Erf", [scaled], [b.temp(node, "erf")]), outs
            )
        else:  # x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            cube = b.add(node, "Mul", [ins[0], ins[0]], [b.temp(node, "square")])
            cube = b.add(node, "Mul", [cube, ins[0]], [b.temp(node, "cube")])
            cube = b.add(
                node, "Mul", [cube, b.const(node, "k", 0.044715, "f32")], [b.temp(node, "k_cube")]
            )
            inner = b.add(node, "Add", [ins[0], cube], [b.temp(node, "inner")])
            inner = b.add(
                node,
                "Mul",
                [inner, b.const(node, "c", (2 / math.pi) ** 0.5, "f32")],
                [b.temp(node, "c_inner")],
            )
            _half_x_times_one_plus(
                node, b, ins[0], b.add(node, "Tanh", [inner], [b.temp(node, "tanh")]), outs
            )


def _half_x_times_one_plus(node, b, x: str, t: str, outs: list[str]) -> None:
    one_plus = b.add(node, "Add", [t, b.const(node, "one", 1.0, "f32")], [b.temp(node, "one_plus")])
    half_x = b.add(node, "Mul", [x, b.const(node, "half", 0.5, "f32")], [b.temp(node, "half_x")])
    b.add(node, "Mul", [half_x, one_plus], outs)


class SoftmaxLike(Activation):
    attrs = (Attr("axis", "int", -1, "the dim that sums to one"),)

    def torch_layer(self, node):
        return ctor(self.layer, dim=attr(node, "axis"))

    def resolve(self, ins, a):
        r = ins[0].rank
        if not -r <= a["axis"] < r:
            raise SpecError(f"{self.name}: axis {a['axis']} is out of range for {ins[0]}")
        return a

    def onnx_attrs(self, a):
        return {"axis": a["axis"]}


for _name, _fn, _op in (
    ("softmax", "softmax", "Softmax"),
    ("log_softmax", "log_softmax", "LogSoftmax"),
):
    register(
        type(
            _op,
            (SoftmaxLike,),
            {
                "name": _name,
                "torch_fmt": f"F.{_fn}({{x}}, dim={{axis}})",
                "onnx_op": _op,
                "layer": f"nn.{_op}",
                "doc": ("exp(x) / sum exp(x)" if _name == "softmax" else "x - log(sum exp(x))")
                + " along axis.",
                "example": f"x -> {_name}",
            },
        )
    )
