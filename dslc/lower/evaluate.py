"""Evaluation of expressions during lowering: compile-time values (`width * 4`, `a if c else
b`, comparisons), tensor arithmetic (`a + b` becomes an add node), and pipelines (`x -> f`),
whose stages are calls that the Elaborator (dslc.lower.elaborate) resolves to ops and blocks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from dslc.diagnostics import Span, SpecError
from dslc.frontend import ast
from dslc.ir.graph import Value
from dslc.ir.limits import MAX_REPEAT, Budget, check_list, check_value, number_text
from dslc.ir.types import Sym, dim_add, dim_mul
from dslc.lower.binding import Arg
from dslc.lower.scope import Frame, Poisoned, Scope
from dslc.lower.subscript import QUERIES, expand, number, pick, shape_query
from dslc.ops.base import REGISTRY, describe
from dslc.ops.index import Cut, Item, item_text


class Evaluator:
    """The expression half of the Elaborator, which supplies `call` and `apply`."""

    # Supplied by the Elaborator: resolve a call to an op or block, and add an op's node.
    call: Callable[..., Any]
    apply: Callable[..., Value | tuple]
    budget: Budget  # the running node count (dslc.ir.limits)
    blocks: dict[str, ast.Definition]  # the file's blocks, by name

    # ---- expressions
    def eval(self, e: ast.Expr, scope: Scope, frame: Frame) -> Any:
        match e:
            case ast.Literal():  # the parser has bounded literals already
                return e.value
            case ast.Ref():
                return scope.lookup(e.name, e.span)
            case ast.ListExpr():
                items = [self.eval(i, scope, frame) for i in e.items]
                check_list(items, e.span)
                return items
            case ast.Neg():
                v = self.eval(e.operand, scope, frame)
                return (
                    self.arith("*", v, -1, e.span, frame)
                    if isinstance(v, Value)
                    else self.arith("-", 0, v, e.span, frame)
                )
            case ast.BinOp():
                left, right = self.eval(e.left, scope, frame), self.eval(e.right, scope, frame)
                return self.arith(e.op, left, right, e.span, frame)
            case ast.Call() if e.name in QUERIES and e.name not in self.blocks:
                return shape_query(
                    e.name,
                    [self.eval(a, scope, frame) for a in e.args],
                    {k.name: k for k in e.kwargs},
                    e.span,
                )
            case ast.Index():
                return self.subscript(e, scope, frame)
            case ast.Call():
                return self.invoke(
                    e.name,
                    e.name_span,
                    e.span,
                    self.args(e.args, scope, frame),
                    self.kwargs(e.kwargs, scope, frame),
                    None,
                    frame,
                )
            case ast.Pipe():
                return self.stage(self.eval(e.source, scope, frame), e.stage, scope, frame)
            case ast.IfElse():
                taken = e.then if self.condition(e.cond, scope, frame) else e.other
                return self.eval(taken, scope, frame)
            case ast.Logic():
                left = self.condition(e.left, scope, frame)
                if e.op == "not":
                    return not left
                # short-circuit, as in Python
                if (e.op == "and") != left:
                    return left
                assert e.right is not None  # only "not" has no right operand
                return self.condition(e.right, scope, frame)
            case ast.Compare():
                return self.compare(e, scope, frame)
        raise AssertionError(f"unknown expression {e!r}")

    def subscript(self, e: ast.Index, scope: Scope, frame: Frame) -> Any:
        """`base[items]`: an index node on a tensor; Python's indexing on a list or tuple."""
        base = self.eval(e.base, scope, frame)
        items = [self.item(i, scope, frame) for i in e.items]
        if isinstance(base, list | tuple):
            return pick(base, items, e.span)
        if not isinstance(base, Value):
            raise SpecError(f"cannot index {describe(base)}", span=e.base.span)
        subscript = expand(items, base.type.rank, e.span)
        if not subscript:
            return base
        return self.apply(REGISTRY["index"], [base], {"items": item_text(subscript)}, e.span, frame)

    def item(self, x: ast.Subscript, scope: Scope, frame: Frame) -> Item | None:
        """One subscript: an integer, a Cut, or None for `...`."""
        if isinstance(x, ast.Ellipsis_):
            return None
        if not isinstance(x, ast.Slice):
            return number(self.eval(x, scope, frame), "an index", x.span)
        bounds = [
            None if b is None else number(self.eval(b, scope, frame), f"a slice's {what}", b.span)
            for b, what in ((x.start, "start"), (x.stop, "stop"), (x.step, "step"))
        ]
        if bounds[2] == 0:
            raise SpecError("a slice step cannot be 0", span=x.span)
        return Cut(bounds[0], bounds[1], 1 if bounds[2] is None else bounds[2])

    def invoke(
        self,
        name: str,
        name_span: Span,
        span: Span,
        args: list[Arg],
        kwargs: dict[str, Arg],
        piped: Arg | None,
        frame: Frame,
    ) -> Any:
        """A call. A block instance counts against the node budget before it expands, as its
        expansion costs as much as a node; and a block called as before (the same input types
        and parameters) will make as many nodes as then, which the budget checks first."""
        if name not in self.blocks:
            return self.call(name, name_span, span, args, kwargs, piped, frame)
        key = _call_key(name, args, kwargs, piped)
        self.budget.step(span, Poisoned)
        self.budget.expect(self.budget.expansions.get(key, 0), span)
        start = self.budget.nodes
        out = self.call(name, name_span, span, args, kwargs, piped, frame)
        self.budget.expansions[key] = self.budget.nodes - start
        return out

    def condition(self, e: ast.Expr, scope: Scope, frame: Frame) -> bool:
        value = self.eval(e, scope, frame)
        if not isinstance(value, bool):
            raise SpecError(
                f"a condition must be true or false, got {describe(value)}", span=e.span
            )
        return value

    def compare(self, e: ast.Compare, scope: Scope, frame: Frame) -> bool:
        left, right = self.eval(e.left, scope, frame), self.eval(e.right, scope, frame)
        if isinstance(left, Value) or isinstance(right, Value):
            raise SpecError("comparisons are on compile-time values, not tensors", span=e.span)
        if e.op in ("==", "!="):
            return (left == right) == (e.op == "==")
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right))
        if not numbers:
            raise SpecError(
                f"'{e.op}' compares numbers, not {describe(left)} and {describe(right)}",
                span=e.span,
            )
        return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[
            e.op
        ]

    def args(self, exprs: tuple[ast.Expr, ...], scope: Scope, frame: Frame) -> list[Arg]:
        return [Arg(self.eval(x, scope, frame), x.span) for x in exprs]

    def kwargs(self, kws: tuple[ast.Kwarg, ...], scope: Scope, frame: Frame) -> dict[str, Arg]:
        out: dict[str, Arg] = {}
        for kw in kws:
            if kw.name in out:
                raise SpecError(f"argument '{kw.name}' is given twice", span=kw.span)
            out[kw.name] = Arg(self.eval(kw.value, scope, frame), kw.span)
        return out

    def stage(self, value: Any, st: ast.Stage, scope: Scope, frame: Frame) -> Any:
        match st:
            case ast.StageCall():
                return self.invoke(
                    st.name,
                    st.span,
                    st.span,
                    self.args(st.args, scope, frame),
                    self.kwargs(st.kwargs, scope, frame),
                    Arg(value, st.span),
                    frame,
                )
            case ast.StageSeq():
                for inner in st.stages:
                    value = self.stage(value, inner, scope, frame)
                return value
        raise AssertionError(f"unknown stage {st!r}")

    def repeat_count(self, e: ast.Expr, scope: Scope, frame: Frame) -> int:
        n = self.eval(e, scope, frame)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise SpecError(
                f"a repeat count must be a non-negative integer, got {describe(n)}", span=e.span
            )
        if n > MAX_REPEAT:
            raise SpecError(
                f"a repeat count of {number_text(n, grouped=True)} is beyond dslc's limit "
                f"of {MAX_REPEAT:,}",
                span=e.span,
            )
        return n

    def arith(self, op: str, left: Any, right: Any, span: Span, frame: Frame) -> Any:
        """`a + b`: a node on tensors; on compile-time numbers, a number within the limits."""
        if isinstance(left, Value) or isinstance(right, Value):
            return self.tensor_arith(op, left, right, span, frame)
        for v in (left, right):  # a --param value may be beyond the limits
            check_value(v, span)
        return check_value(self.number_arith(op, left, right, span), span)

    def number_arith(self, op: str, left: Any, right: Any, span: Span) -> Any:
        for v in (left, right):
            if isinstance(v, bool) or not isinstance(v, int | float | Sym):
                raise SpecError(f"cannot apply '{op}' to {describe(v)}", span=span)
        if isinstance(left, Sym) or isinstance(right, Sym):
            if any(isinstance(v, float) for v in (left, right)):
                raise SpecError("symbolic dims combine with integers only", span=span)
            if op in "+-":
                return dim_add(left, right, 1 if op == "+" else -1)
            if op == "*":
                return dim_mul(left, right)
            raise SpecError("symbolic dims can be added, subtracted and multiplied only", span=span)
        if op == "/":
            if right == 0:
                raise SpecError("division by zero", span=span)
            exact = isinstance(left, int) and isinstance(right, int) and left % right == 0
            return left // right if exact else left / right
        return {"+": left + right, "-": left - right, "*": left * right}[op]

    def tensor_arith(self, op: str, left: Any, right: Any, span: Span, frame: Frame) -> Value:
        name = {"+": "add", "-": "sub", "*": "mul", "/": "div"}[op]
        if isinstance(left, Value) and isinstance(right, Value):
            return cast(  # binary ops have one output
                Value,
                self.apply(
                    REGISTRY[name], [left, right], {"scalar": None, "reverse": False}, span, frame
                ),
            )
        tensor, number = (left, right) if isinstance(left, Value) else (right, left)
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise SpecError(f"cannot apply '{op}' to a tensor and {describe(number)}", span=span)
        reverse = not isinstance(left, Value)
        scalar_attr = next(a for a in REGISTRY[name].attrs if a.name == "scalar")
        try:
            number = scalar_attr.coerce(f"'{op}'", number)
        except SpecError as err:
            raise SpecError(err.message, err.hint, span) from None
        return cast(
            Value,
            self.apply(
                REGISTRY[name], [tensor], {"scalar": float(number), "reverse": reverse}, span, frame
            ),
        )


def _call_key(name: str, args: list[Arg], kwargs: dict[str, Arg], piped: Arg | None) -> tuple:
    """What a block's expansion depends on: its input types and parameter values."""

    def key(v: Any) -> Any:
        if isinstance(v, Value):
            return v.type
        if isinstance(v, list | tuple):
            return tuple(map(key, v))
        return (type(v), v)  # 1 and 1.0 and true differ here

    given = [*([piped] if piped else []), *args]
    return (
        name,
        tuple(key(a.value) for a in given),
        tuple((k, key(a.value)) for k, a in kwargs.items()),
    )
