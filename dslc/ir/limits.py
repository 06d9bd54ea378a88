"""The limits of the language, in one place: how large a compile-time number, an attribute, a
tensor, a constant table, a model and a literal list may be. Each is checked where the thing is
made, before anything large is built, so that a spec beyond them is a located error in a fraction
of a second rather than a hang, an exhausted memory or a crash deep in PyTorch or ONNX.
docs/limits.md lists them with their reasons."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dslc.diagnostics import Span, SpecError
from dslc.ir.types import Sym, TensorType

if TYPE_CHECKING:
    from dslc.ir.graph import ParamSpec
    from dslc.ops.base import OpDef

# Compile-time integers (`width * 4`, block parameters): int64, what a dim or an attribute
# becomes in ONNX and PyTorch.
MAX_INT = 2**63 - 1
# Integer attributes (stride=, num_embeddings=, max_len=) and each dim of a declared type: int32.
# Larger strides, kernels or table sizes describe no model that fits in memory.
MAX_ATTR_INT = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38  # numbers that become float32 (weights, scalars, rates)
# Elements of one tensor: of a value's type (symbolic dims counted as 1), of a parameter, of a
# constant table an op builds (a sinusoidal table, an averaging matrix). 2**28 float32 is 1 GiB.
MAX_ELEMENTS = 2**28
MAX_PARAMETERS = 2**30  # parameters of the whole model: 4 GiB of float32
MAX_NODES = 50_000  # nodes of the expanded graph, and block instances (as costly to expand)
MAX_REPEAT = 10_000  # the count of one `stage * n`
MAX_LIST_VALUES = 65_536  # numbers in one literal list (init values, a filter kernel)
# The spec's text: Lark parses about 10,000 lines a second here, so a spec beyond these is
# refused before it is parsed (the largest in specs/ has 50 lines).
MAX_SOURCE_LINES = 20_000
MAX_SOURCE_BYTES = 2**20
# Imports (frontend/imports): each file is held to the limits above, and the files a spec
# imports, directly or not, with the spec itself, to these together, so that a hostile import
# graph (a thousand files of 20,000 lines) is refused at the import line that goes past them.
MAX_SOURCE_FILES = 256
MAX_TOTAL_SOURCE_LINES = 4 * MAX_SOURCE_LINES
MAX_TOTAL_SOURCE_BYTES = 4 * MAX_SOURCE_BYTES


def number_text(v: int | float, grouped: bool = False) -> str:
    """A number for a message: huge integers by their size, since Python refuses to print an
    int of more than 4300 digits (and nobody reads one). `grouped`: 10,000 for 10000."""
    if isinstance(v, int) and abs(v) > 10**30:
        magnitude = abs(v)
        digits = int(magnitude.bit_length() * 0.30102999566398)  # log10(2): at most one short
        digits += magnitude >= 10**digits
        return f"{'a negative' if v < 0 else 'an'} integer of {digits:,} digits"
    return f"{v:,}" if grouped and isinstance(v, int) else str(v)


def check_value(v: Any, span: Span | None = None) -> Any:
    """A compile-time number: an int within int64, a float finite, a symbolic dim's coefficients
    within int64. Returns v, so that callers can wrap an expression's result."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and abs(v) > MAX_INT:
        raise SpecError(
            f"{number_text(v)} is beyond dslc's limit of ±{MAX_INT:,} for an integer (int64)",
            hint="integers in a spec are sizes and counts, far smaller than that",
            span=span,
        )
    if isinstance(v, float) and not math.isfinite(v):
        raise SpecError(
            f"this number is {v}, beyond float64's range of about ±1.8e308",
            hint="numbers in a spec must be finite",
            span=span,
        )
    if isinstance(v, Sym) and any(abs(c) > MAX_INT for c in _coefficients(v)):
        raise SpecError(
            f"this symbolic dim has a coefficient beyond dslc's limit of ±{MAX_INT:,} (int64)",
            span=span,
        )
    return v


def check_weight(w: float, span: Span) -> float:
    """A loss term's weight, which the generated code multiplies a float32 loss by: within
    float32's range, or the loss is inf (and its gradients nan)."""
    if not abs(w) <= FLOAT32_MAX:  # nan too
        raise SpecError(
            f"this scales a loss term by {w:g}, beyond float32's range",
            hint="loss weights are small factors such as 0.5 or 1e-3",
            span=span,
        )
    return w


def _coefficients(s: Sym) -> list[int]:
    return [s.const, *(c for _, c in s.terms)]


def elements(t: TensorType | tuple[int | Sym, ...]) -> int:
    """Elements of a tensor at its smallest: symbolic dims count as 1 (`N`) or as the
    smallest value of their linear form (`2*T + 1` is 3); opaque expressions as 1."""
    n = 1
    for d in t.shape if isinstance(t, TensorType) else t:
        n *= d if type(d) is int and d > 0 else _least(d)  # the common case first: it is hot
    return n


def _least(d: int | Sym) -> int:
    if isinstance(d, int):
        return max(d, 1)
    if d.text is not None:
        return 1
    return max(1, sum(c for _, c in d.terms) + d.const)


def _too_large(what: str, shape: Iterable[Any], n: int, span: Span | None) -> SpecError:
    """`what` is followed by the shape: "the tensor f32" gives `the tensor f32[N, 4]`."""
    dims = ", ".join(number_text(d) if isinstance(d, int) else str(d) for d in shape)
    return SpecError(
        f"{what}[{dims}] has {_count_text(n)} elements, beyond dslc's limit of "
        f"{MAX_ELEMENTS:,} for one tensor",
        hint="a tensor of that size needs more than 1 GiB; make it smaller",
        span=span,
    )


def _count_text(n: int) -> str:
    return f"{n:,}" if n <= 10**30 else "more than 10**30"


def check_type(t: TensorType, span: Span | None = None, what: str = "the tensor") -> TensorType:
    """A tensor type no larger than MAX_ELEMENTS (with symbolic dims at their smallest)."""
    n = elements(t)
    if n > MAX_ELEMENTS:
        raise _too_large(f"{what} {t.dtype}", t.shape, n, span)
    return t


def check_list(values: list[Any], span: Span | None = None) -> None:
    """A literal list of numbers, nested or not, of at most MAX_LIST_VALUES numbers."""
    n = _count(values, MAX_LIST_VALUES + 1)
    if n > MAX_LIST_VALUES:
        raise SpecError(
            f"a literal list of more than {MAX_LIST_VALUES:,} numbers is beyond dslc's limit",
            hint="values that large belong in a weights file (dslc compile --weights)",
            span=span,
        )


def _count(v: Any, stop: int) -> int:
    """Leaves of a nested list, counting no further than `stop`."""
    if not isinstance(v, list):
        return 1
    total = 0
    for item in v:
        total += _count(item, stop - total)
        if total >= stop:
            break
    return total


def _too_many(span: Span) -> SpecError:
    return SpecError(
        f"the model expands to more than {MAX_NODES:,} nodes, beyond dslc's limit",
        hint="blocks and `* n` repetition expand into one node per layer: "
        "check the repeat counts and how deeply blocks call blocks",
        span=span,
    )


@dataclass
class Budget:
    """The running totals of one elaboration: the expansion so far (nodes, and block instances,
    which cost as much to expand) and the parameters. A spec beyond MAX_NODES is reported once,
    where it crossed the limit; every later node is refused silently (with `quiet`, the
    elaborator's way of skipping a statement whose error is already reported)."""

    nodes: int = 0  # nodes and block instances
    parameters: int = 0
    exceeded: bool = False
    # Nodes a block call made, by block, input types and parameters (Evaluator.invoke).
    expansions: dict[tuple, int] = field(default_factory=dict)

    def step(self, span: Span, quiet: type[Exception]) -> None:
        """One more node or block instance."""
        if self.exceeded:
            raise quiet()
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.exceeded = True
            raise _too_many(span)

    def expect(self, coming: int, span: Span) -> None:
        """Refuse now an expansion known to make `coming` more nodes past the limit."""
        if self.nodes + coming > MAX_NODES:
            self.exceeded = True
            raise _too_many(span)

    def node(
        self,
        op: OpDef,
        ins: list[TensorType],
        outs: list[TensorType],
        attrs: dict[str, Any],
        params: Mapping[str, ParamSpec],
        span: Span,
        quiet: type[Exception],
    ) -> None:
        """Check one node before the elaborator adds it: the graph's size, its output types,
        its parameters and the constant tables its op would build."""
        self.step(span, quiet)
        for key, p in params.items():
            self._parameter(op, key, p.shape, span)
        for key, shape in op.tables(ins, attrs).items():
            n = elements(shape)
            if n > MAX_ELEMENTS:
                raise _too_large(f"{op.name}: the constant {key} ", shape, n, span)
        for i, t in enumerate(outs):
            check_type(t, span, f"{op.name}: its output{f' {i}' if len(outs) > 1 else ''}")

    def _parameter(self, op: OpDef, key: str, shape: tuple[int, ...], span: Span) -> None:
        n = elements(shape)
        if n > MAX_ELEMENTS:
            raise _too_large(f"{op.name}: parameter {key} ", shape, n, span)
        self.parameters += n
        if self.parameters > MAX_PARAMETERS:
            raise SpecError(
                f"{op.name}: the model has more than {MAX_PARAMETERS:,} parameters with this "
                "one, beyond dslc's limit",
                span=span,
            )

    def repeat(self, count: int, per_copy: int, span: Span) -> None:
        """Before expanding `stage * count`, once one copy has made `per_copy` nodes: refuse
        at once a repetition whose copies would pass MAX_NODES."""
        if self.nodes + (count - 1) * per_copy > MAX_NODES:
            self.exceeded = True
            raise SpecError(
                f"this repetition expands to {count:,} x {per_copy:,} nodes, beyond dslc's "
                f"limit of {MAX_NODES:,} for the model",
                hint="lower the repeat count, or the nodes in what it repeats",
                span=span,
            )
