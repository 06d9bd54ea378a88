"""Subscripts and shape queries during lowering.

`x[:, 1:]` on a tensor becomes an `index` node (dslc.ops.index), with `...` expanded and the
trailing whole slices dropped; on a compile-time list (`widths[i]`, `shape(x)[1:]`) or a block's
outputs it is Python's indexing. `shape(x)` is the list of x's dims, integers and symbolic dims:
a block reads its input's channels as `shape(x)[1]`, a compile-time integer for `groups=`,
widths and conditions."""

from __future__ import annotations

from typing import Any

from dslc.diagnostics import Span, SpecError
from dslc.ir.graph import Value
from dslc.ops.base import describe
from dslc.ops.index import Cut, Item

# Compile-time functions of tensors, by name: what each returns.
QUERIES = {"shape": "the list of a tensor's dims (`shape(x)[1]` is its channels)"}


def shape_query(name: str, args: list[Any], kwargs: dict, span: Span) -> list:
    if kwargs or len(args) != 1 or not isinstance(args[0], Value):
        raise SpecError(f"{name} takes one tensor, such as `{name}(x)[1]`", span=span)
    return list(args[0].type.shape)


def expand(items: list[Item | None], rank: int, span: Span) -> tuple[Item, ...]:
    """The subscript of a rank-`rank` tensor, one item per leading dim: `...` (None here)
    stands for as many whole slices as the rest leaves; trailing whole slices are dropped."""
    dots = [i for i, item in enumerate(items) if item is None]
    if len(dots) > 1:
        raise SpecError("a subscript holds at most one `...`", span=span)
    given = len(items) - len(dots)
    if given > rank:
        raise SpecError(f"{given} subscripts for a tensor of rank {rank}", span=span)
    if dots:
        k = dots[0]
        items = [*items[:k], *[Cut()] * (rank - given), *items[k + 1 :]]
    out = [i for i in items if i is not None]
    while out and isinstance(out[-1], Cut) and out[-1].whole:
        out.pop()
    return tuple(out)


def pick(value: Any, items: list[Item | None], span: Span) -> Any:
    """A subscript of a compile-time list or of a block's several outputs."""
    item = items[0] if len(items) == 1 else None
    if item is None:
        raise SpecError(f"{describe(value)} takes one index or slice", span=span)
    seq = list(value)
    if isinstance(item, int):
        if not -len(seq) <= item < len(seq):
            raise SpecError(f"index {item} is out of range for {len(seq)} items", span=span)
        return seq[item]
    if item.step == 0:
        raise SpecError("a slice step cannot be 0", span=span)
    part = seq[item.start : item.stop : item.step]
    return tuple(part) if isinstance(value, tuple) else part


def number(v: Any, what: str, span: Span) -> int:
    if isinstance(v, Value):
        raise SpecError(
            f"{what} must be a compile-time integer, not a tensor",
            hint="indexing by a tensor of positions is not in the language yet",
            span=span,
        )
    if isinstance(v, bool) or not isinstance(v, int):
        hint = "count from the end with a negative number: `x[:, :-1]`" if v is not None else None
        raise SpecError(f"{what} must be an integer, got {describe(v)}", hint=hint, span=span)
    return v
