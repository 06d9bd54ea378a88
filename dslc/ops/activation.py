"""Elementwise nonlinearities and (log-)softmax. The simple ones are rows of one table."""

from __future__ import annotations

import math
from typing import Any

from dslc.diagnostics import SpecError
from dslc.ops.base import Attr, OpDef, expect_float, register
from dslc.ops.pycode import attr, ctor, render


class Activation(OpDef):
    """An elementwise function with an nn.Module form (`layer`, built from the attributes:
    those in `positional` by position, the rest by keyword, left out at their default) and a
    functional form (`function`) that takes the same arguments after the input."""

    family = "activation"
    function: str  # torch.relu, F.elu
    layer: str  # nn.ReLU, nn.ELU
    positional: tuple[str, ...] = ()
    onnx_op: str

    def positions(self, node, flow):
        return flow.same(node)

    def infer(self, ins, a):
        expect_float(self.name, ins[0])
        return ins[0]

    def torch_layer(self, node):
        args = [attr(node, n) for n in self.positional]
        kwargs = {
            a.name: attr(node, a.name, default=a.default)
            for a in self.attrs
            if a.name not in self.positional
        }
        return ctor(self.layer, *args, **kwargs)

    def torch_call(self, node, args, module):
        return render(self.torch_layer(node), self.function, args[0])

    def onnx_attrs(self, a: dict[str, Any]) -> dict[str, Any]:
        return {}

    def onnx(self, node, b, ins, outs):
        b.add(node, self.onnx_op, ins, outs, **self.onnx_attrs(node.attrs))


def activation(
    name: str,
    doc: str,
    function: str,
    onnx_op: str,
    layer: str,
    attrs: tuple[Attr, ...] = (),
    onnx_attrs=None,
    example: str = "",
    positional: tuple[str, ...] = (),
) -> None:
    body: dict[str, Any] = {
        "name": name,
        "layer": layer,
        "doc": doc,
        "function": function,
        "onnx_op": onnx_op,
        "attrs": attrs,
        "positional": positional,
        "example": example or f"x -> {name}",
    }
    if onnx_attrs:
        body["onnx_attrs"] = lambda self, a: onnx_attrs(a)
    register(type(name.title().replace("_", ""), (Activation,), body))


activation("relu", "max(x, 0).", "torch.relu", "Relu", "nn.ReLU")
activation("sigmoid", "1 / (1 + exp(-x)).", "torch.sigmoid", "Sigmoid", "nn.Sigmoid")
activation("tanh", "Hyperbolic tangent.", "torch.tanh", "Tanh", "nn.Tanh")
activation(
    "leaky_relu",
    "x for x > 0, negative_slope * x otherwise.",
    "F.leaky_relu",
    "LeakyRelu",
    "nn.LeakyReLU",
    (Attr("negative_slope", "float", 0.01, "slope for x < 0"),),
    onnx_attrs=lambda a: {"alpha": a["negative_slope"]},
    example="x -> leaky_relu(0.2)",
    positional=("negative_slope",),
)
activation(
    "hardswish",
    "x * relu6(x + 3) / 6 (MobileNetV3's; torch.nn.Hardswish).",
    "F.hardswish",
    "HardSwish",
    "nn.Hardswish",
)
activation(
    "hardsigmoid",
    "relu6(x + 3) / 6 (torch.nn.Hardsigmoid).",
    "F.hardsigmoid",
    "HardSigmoid",
    "nn.Hardsigmoid",
    onnx_attrs=lambda a: {"alpha": 1 / 6, "beta": 0.5},
)
activation(
    "elu",
    "x for x > 0, alpha * (exp(x) - 1) otherwise (torch.nn.ELU).",
    "F.elu",
    "Elu",
    "nn.ELU",
    (Attr("alpha", "float", 1.0, "the value x -> -infinity tends to, times -1"),),
    onnx_attrs=lambda a: {"alpha": a["alpha"]},
    example="x -> elu(alpha=0.5)",
)
activation(
    "selu",
    "scale * elu(x, alpha) with the self-normalizing constants (torch.nn.SELU).",
    "F.selu",
    "Selu",
    "nn.SELU",
)
activation("mish", "x * tanh(softplus(x)) (torch.nn.Mish).", "F.mish", "Mish", "nn.Mish")


@register
class Silu(Activation):
    name = "silu"
    doc = "x * sigmoid(x), the swish of EfficientNet and LLaMA's MLP (torch.nn.SiLU)."
    example = "x -> silu"
    function, layer = "F.silu", "nn.SiLU"

    def onnx(self, node, b, ins, outs):
        gate = b.add(node, "Sigmoid", ins, [b.temp(node, "sigmoid")])
        b.add(node, "Mul", [ins[0], gate], outs)


@register
class Softplus(Activation):
    name = "softplus"
    doc = (
        "log(1 + exp(beta * x)) / beta, and x itself where beta * x > threshold "
        "(torch.nn.Softplus)."
    )
    example = "x -> softplus"
    function, layer = "F.softplus", "nn.Softplus"
    attrs = (
        Attr("beta", "float", 1.0, "sharpness", positive=True),
        Attr("threshold", "float", 20.0, "beta * x above which it is x"),
    )

    def onnx(self, node, b, ins, outs):
        a, dtype = node.attrs, node.inputs[0].type.dtype
        bx = b.add(
            node, "Mul", [ins[0], b.const(node, "beta", a["beta"], dtype)], [b.temp(node, "bx")]
        )
        soft = b.add(node, "Softplus", [bx], [b.temp(node, "softplus")])
        soft = b.add(
            node, "Div", [soft, b.const(node, "beta", a["beta"], dtype)], [b.temp(node, "scaled")]
        )
        linear = b.add(
            node,
            "Greater",
            [bx, b.const(node, "threshold", a["threshold"], dtype)],
            [b.temp(node, "linear")],
        )
        b.add(node, "Where", [linear, ins[0], soft], outs)


@register
class Gelu(Activation):
    name = "gelu"
    doc = "Gaussian error linear unit, exact (erf) or its tanh approximation."
    example = "x -> gelu"
    attrs = (Attr("approximate", "str", "none", "none (erf) or tanh", choices=("none", "tanh")),)
    onnx_op = "Gelu"
    function, layer = "F.gelu", "nn.GELU"

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

    def positions(self, node, flow):
        return flow.mixes(node, (node.attrs["axis"],), softmax=self.name == "softmax")


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
                "function": f"F.{_fn}",
                "onnx_op": _op,
                "layer": f"nn.{_op}",
                "doc": ("exp(x) / sum exp(x)" if _name == "softmax" else "x - log(sum exp(x))")
                + " along axis.",
                "example": f"x -> {_name}",
            },
        )
    )
