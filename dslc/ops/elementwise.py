"""Elementwise ops: the arithmetic that `a + b`, `a * b`, `x * 0.5` compile to (with
broadcasting), the math functions exp, log, sqrt, abs and pow, and the elementwise minimum and
maximum of two tensors."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ir.types import INT_DTYPES, Dim, TensorType
from dslc.ops.base import Attr, OpDef, expect_float, register


def broadcast(op: str, a: TensorType, b: TensorType) -> TensorType:
    if a.dtype != b.dtype:
        raise SpecError(f"{op}: dtypes differ: {a} and {b}")
    shape: list[Dim] = []
    for i in range(1, max(a.rank, b.rank) + 1):
        p = a.shape[-i] if i <= a.rank else 1
        q = b.shape[-i] if i <= b.rank else 1
        if p != q and p != 1 and q != 1:
            raise SpecError(
                f"{op}: shapes {a.shape_str()} and {b.shape_str()} do not match "
                f"(dim -{i}: {p} vs {q})"
            )
        shape.append(q if p == 1 else p)
    return a.with_shape(tuple(reversed(shape)))


class Binary(OpDef):
    family = "elementwise"
    inputs = ("a", "b?")  # the second input is absent when `scalar` is set: x * 0.5
    attrs = (
        Attr("scalar", "float", None, "a constant operand instead of b"),
        Attr("reverse", "bool", False, "the scalar is the left operand (1 - x)"),
    )
    symbol: str
    onnx_op: str

    def positions(self, node, flow):
        reversed_ = node.attrs["reverse"] and self.name in ("sub", "div")  # 1 - x, 1 / x
        return flow.same(node, keeps=None if reversed_ else self.name)

    def infer(self, ins, a):
        for t in ins:
            if t.dtype == "bool" or (self.name == "div" and t.dtype in INT_DTYPES):
                what = (
                    "true/false values"
                    if t.dtype == "bool"
                    else "integers (PyTorch's / gives floats)"
                )
                raise SpecError(f"'{self.symbol}' on {what} is not supported, got {t}")
        if len(ins) == 1:
            if a["scalar"] is None:
                raise SpecError(
                    f"{self.name} needs a second tensor or a number: write `a {self.symbol} b`"
                )
            if not ins[0].dtype.startswith(("f", "bf")):
                raise SpecError(
                    f"{self.name} with a number needs a floating-point tensor, got {ins[0]}"
                )
            return ins[0]
        return broadcast(f"'{self.symbol}' ({self.name})", ins[0], ins[1])

    def _operands(self, node, args: list[str]) -> list[str]:
        if len(args) == 2:
            return args
        operands = [args[0], repr(node.attrs["scalar"])]
        return operands[::-1] if node.attrs["reverse"] else operands

    def torch_call(self, node, args, module):
        left, right = self._operands(node, args)
        return f"{left} {self.symbol} {right}"

    def onnx(self, node, b, ins, outs):
        if len(ins) == 1:
            ins = [ins[0], b.const(node, "scalar", node.attrs["scalar"], node.inputs[0].type.dtype)]
            ins = ins[::-1] if node.attrs["reverse"] else ins
        b.add(node, self.onnx_op, ins, outs)


for _name, _sym, _op in (
    ("add", "+", "Add"),
    ("sub", "-", "Sub"),
    ("mul", "*", "Mul"),
    ("div", "/", "Div"),
):
    register(
        type(
            _op,
            (Binary,),
            {
                "name": _name,
                "symbol": _sym,
                "onnx_op": _op,
                "doc": f"a {_sym} b elementwise, with broadcasting; written `a {_sym} b`.",
                "example": f"y = a {_sym} b",
            },
        )
    )


class Unary(OpDef):
    family = "elementwise"
    function: str
    onnx_op: str

    def positions(self, node, flow):
        return flow.same(node)

    def infer(self, ins, a):
        expect_float(self.name, ins[0])
        return ins[0]

    def torch_call(self, node, args, module):
        return f"{self.function}({args[0]})"

    def onnx(self, node, b, ins, outs):
        b.add(node, self.onnx_op, ins, outs)


for _name, _doc, _op in (
    ("exp", "e to the power x.", "Exp"),
    ("log", "The natural logarithm (-inf at 0, NaN below, as in PyTorch and ONNX).", "Log"),
    ("sqrt", "The square root (NaN below 0).", "Sqrt"),
    ("abs", "|x|.", "Abs"),
):
    register(
        type(
            _op,
            (Unary,),
            {
                "name": _name,
                "doc": _doc,
                "function": f"torch.{_name}",
                "onnx_op": _op,
                "example": f"x -> {_name}",
            },
        )
    )


@register
class Pow(Unary):
    name = "pow"
    doc = "x to the power `exponent`, a constant (torch.pow)."
    example = "x -> pow(2)"
    attrs = (Attr("exponent", "float", doc="the power"),)

    def torch_call(self, node, args, module):
        return f"torch.pow({args[0]}, {node.attrs['exponent']!r})"

    def onnx(self, node, b, ins, outs):
        dtype = node.inputs[0].type.dtype
        b.add(node, "Pow", [ins[0], b.const(node, "exponent", node.attrs["exponent"], dtype)], outs)


class Extremum(OpDef):
    family = "elementwise"
    inputs = ("a", "b")
    onnx_op: str

    def positions(self, node, flow):
        return flow.same(node)

    def infer(self, ins, a):
        for t in ins:
            expect_float(self.name, t)
        return broadcast(self.name, ins[0], ins[1])

    def torch_call(self, node, args, module):
        return f"torch.{self.name}({args[0]}, {args[1]})"

    def onnx(self, node, b, ins, outs):
        b.add(node, self.onnx_op, ins, outs)


for _name, _op, _what in (("minimum", "Min", "smaller"), ("maximum", "Max", "larger")):
    register(
        type(
            _op,
            (Extremum,),
            {
                "name": _name,
                "onnx_op": _op,
                "doc": f"The {_what} of a and b, elementwise, with broadcasting (torch.{_name}).",
                "example": f"y = {_name}(a, b)",
            },
        )
    )
