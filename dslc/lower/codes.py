"""Compile-time expressions of a spec as Python source over a definition's parameters.

`conv2d(width * 4, 1)` in block Bottleneck(width) gives out_channels 256 in one instance and 512
in another; the generated Bottleneck class writes `width * 4`. Each name in scope carries the
source that stands for it (a block parameter: its own name; a model parameter or a file
constant: its value; a local compile-time value: its defining expression), and `translate`
builds the source of an expression from them. Anything that is not a compile-time expression
(a tensor, an unknown construct) has no source (None)."""

from __future__ import annotations

import ast as py
from typing import Any

from dslc.frontend import ast
from dslc.ir.limits import MAX_INT
from dslc.ir.structure import DIM_MARKER

_OPS = {"+": py.Add(), "-": py.Sub(), "*": py.Mult()}
_COMPARE = {
    "==": py.Eq(),
    "!=": py.NotEq(),
    "<": py.Lt(),
    ">": py.Gt(),
    "<=": py.LtE(),
    ">=": py.GtE(),
}


def constant(value: Any) -> py.expr | None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return None  # beyond the limits: an error elsewhere, never source
    if isinstance(value, bool | int | float | str):
        return py.Constant(value)
    if isinstance(value, list | tuple):
        items = [constant(v) for v in value]
        return None if any(i is None for i in items) else py.List([*items], py.Load())  # type: ignore[list-item]
    return None


def translate(e: ast.Expr, codes: dict[str, py.expr], value: Any = None) -> py.expr | None:
    """The Python expression for `e`, given the expressions of the names in scope; `value` is
    what `e` evaluated to (it decides whether `/` divided exactly)."""
    match e:
        case ast.Literal():
            return py.Constant(e.value)
        case ast.Ref():
            return codes.get(e.name)
        case ast.ListExpr():
            items = [translate(i, codes) for i in e.items]
            return None if None in items else py.List(items, py.Load())  # type: ignore[arg-type]
        case ast.Neg():
            inner = translate(e.operand, codes)
            return None if inner is None else py.UnaryOp(py.USub(), inner)
        case ast.BinOp():
            return _binop(e, codes, value)
        case ast.Compare():
            left, right = translate(e.left, codes), translate(e.right, codes)
            if left is None or right is None:
                return None
            return py.Compare(left, [_COMPARE[e.op]], [right])
        case ast.Logic():
            return _logic(e, codes)
        case ast.Call() if e.name == "shape" and len(e.args) == 1 and not e.kwargs:
            arg = e.args[0]
            return codes.get(shape_key(arg.name)) if isinstance(arg, ast.Ref) else None
        case ast.Index():
            return _index(e, codes, value)
        case ast.IfElse():
            parts = [translate(x, codes) for x in (e.cond, e.then, e.other)]
            if None in parts:
                return None
            return py.IfExp(parts[0], parts[1], parts[2])  # type: ignore[arg-type]
    return None


def shape_key(name: str) -> str:
    """Where a block input's dims stand among the names' codes: `shape(x)` reads them."""
    return f"#shape:{name}"


def dim_marker(i: int, d: int) -> py.Name:
    """Dim d of a block's input i in an expression (`shape(x)[1] * 4`); the PyTorch backend
    writes it as the constructor argument that carries that dim (`in_channels * 4`)."""
    return py.Name(f"{DIM_MARKER}{i}_{d}", py.Load())


def _index(e: ast.Index, codes: dict[str, py.expr], value: Any) -> py.expr | None:
    """`shape(x)[1]`, `widths[i]`: a single integer index of a list's source."""
    base = translate(e.base, codes)
    if base is None or len(e.items) != 1 or isinstance(e.items[0], ast.Slice | ast.Ellipsis_):
        return None
    index = translate(e.items[0], codes)
    if index is None:
        return None
    if isinstance(base, py.List) and isinstance(index, py.Constant | py.UnaryOp):
        k = py.literal_eval(index)
        return (
            base.elts[k] if isinstance(k, int) and -len(base.elts) <= k < len(base.elts) else None
        )
    return py.Subscript(base, index, py.Load())


def _binop(e: ast.BinOp, codes: dict[str, py.expr], value: Any) -> py.expr | None:
    left, right = translate(e.left, codes), translate(e.right, codes)
    if left is None or right is None:
        return None
    if e.op == "/":  # .dl's / is exact on integers that divide, else a float
        op: py.operator = py.FloorDiv() if isinstance(value, int) else py.Div()
    else:
        op = _OPS[e.op]
    return py.BinOp(left, op, right)


def _logic(e: ast.Logic, codes: dict[str, py.expr]) -> py.expr | None:
    left = translate(e.left, codes)
    if left is None:
        return None
    if e.op == "not":
        return py.UnaryOp(py.Not(), left)
    right = translate(e.right, codes) if e.right is not None else None
    if right is None:
        return None
    return py.BoolOp(py.And() if e.op == "and" else py.Or(), [left, right])


def source(code: py.expr | None) -> str | None:
    """Python source with the spec's own names; the backend makes them legal Python
    (backends/torch/pynames.python)."""
    return None if code is None else py.unparse(code)
