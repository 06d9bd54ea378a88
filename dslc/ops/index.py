"""Indexing and slicing, `x[:, 0]`, `x[:, 1:]`, `x[..., :k]`, `x[:, ::-1]`, with Python's
meaning on known and symbolic dims alike: one op whose attribute is the subscript itself, one
entry per leading dim (the lowering expands `...` and drops trailing whole slices). PyTorch
gets the same subscript (and a flip for negative steps, which torch's indexing lacks); ONNX
one Slice for every dim it cuts and one Squeeze for the dims an integer indexes."""

from __future__ import annotations

from dataclasses import dataclass

from dslc.diagnostics import SpecError
from dslc.ir.types import Dim, Sym, dim_add, dim_floordiv
from dslc.ops.base import Attr, OpDef, register

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)


@dataclass(frozen=True)
class Cut:
    """A slice `start:stop:step` (None where omitted) of one dim."""

    start: int | None = None
    stop: int | None = None
    step: int = 1

    def __str__(self) -> str:
        text = f"{_text(self.start)}:{_text(self.stop)}"
        return text if self.step == 1 else f"{text}:{self.step}"

    @property
    def whole(self) -> bool:
        return self.start is None and self.stop is None and self.step == 1


Item = int | Cut


def _text(v: int | None) -> str:
    return "" if v is None else str(v)


def item_text(items: tuple[Item, ...]) -> str:
    return ", ".join(str(i) for i in items)


def parse_items(text: str) -> tuple[Item, ...]:
    """The subscript from its text (`":, 1:, ::2"`), as the IR writes it."""
    out: list[Item] = []
    for part in text.split(","):
        bits = [b.strip() for b in part.split(":")]
        try:
            if len(bits) == 1:
                out.append(int(bits[0]))
            elif len(bits) <= 3:
                nums = [int(b) if b else None for b in bits] + [None]
                step = 1 if nums[2] is None else nums[2]
                out.append(Cut(nums[0], nums[1], step))
            else:
                raise ValueError(part)
        except ValueError:
            raise SpecError(f"index: {part.strip()!r} is not an index or a slice") from None
    return tuple(out)


@register
class Index(OpDef):
    name = "index"
    family = "shape"
    doc = (
        "Elements of a tensor, written `x[:, 0]`, `x[:, 1:]`, `x[..., :k]`, `x[:, ::-1]` as in "
        "Python: an integer takes one position and removes the dim, a slice keeps the dim; "
        "negative positions count from the end and negative steps run backwards. On a symbolic "
        "dim the size follows from the slice (`x[:, 1:]` of T is T - 1; `x[:, :k]` is k, which "
        "assumes T >= k)."
    )
    example = "cls = x[:, 0]"
    attrs = (Attr("items", "str", doc="the subscript, one entry per leading dim"),)

    def positions(self, node, flow):
        items = parse_items(node.attrs["items"])
        kinds = ["one" if isinstance(x, int) else "all" if x.whole else "part" for x in items]
        return flow.picks(node, kinds)

    def resolve(self, ins, a):
        items = parse_items(a["items"])
        if len(items) > ins[0].rank:
            raise SpecError(
                f"index: {len(items)} subscripts for the rank-{ins[0].rank} input {ins[0]}"
            )
        return {"items": item_text(items)}

    def infer(self, ins, a):
        (x,), items = ins, parse_items(a["items"])
        shape: list[Dim] = []
        for d, item in enumerate(items):
            if isinstance(item, int):
                _check_index(item, x.shape[d], d)
            else:
                shape.append(cut_size(item, x.shape[d], d))
        return x.with_shape((*shape, *x.shape[len(items) :]))

    def torch_call(self, node, args, module):
        items = parse_items(node.attrs["items"])
        sizes = node.inputs[0].type.shape
        flips = [d for d, i in enumerate(items) if isinstance(i, Cut) and i.step < 0]
        source = args[0]
        if flips:
            source = f"{args[0]}.flip({', '.join(map(str, flips))})"
            items = tuple(flipped(i, sizes[d]) if d in flips else i for d, i in enumerate(items))
        while items and isinstance(items[-1], Cut) and items[-1].whole:
            items = items[:-1]
        return f"{source}[{item_text(items)}]" if items else source

    def onnx(self, node, b, ins, outs):
        items = parse_items(node.attrs["items"])
        cuts = [(d, i) for d, i in enumerate(items) if not (isinstance(i, Cut) and i.whole)]
        dropped = [d for d, i in enumerate(items) if isinstance(i, int)]
        ends = [_bounds(i) for _, i in cuts]
        sliced = b.temp(node, "sliced") if dropped else outs[0]
        b.add(
            node,
            "Slice",
            [
                ins[0],
                b.const(node, "starts", [s for s, _, _ in ends], "i64"),
                b.const(node, "ends", [e for _, e, _ in ends], "i64"),
                b.const(node, "axes", [d for d, _ in cuts], "i64"),
                b.const(node, "steps", [s for _, _, s in ends], "i64"),
            ],
            [sliced],
        )
        if dropped:
            b.add(node, "Squeeze", [sliced, b.const(node, "dropped", dropped, "i64")], outs)


def _check_index(i: int, size: Dim, d: int) -> None:
    if isinstance(size, int) and not -size <= i < size:
        raise SpecError(f"index: position {i} is out of range for dim {d} of size {size}")


def _bounds(item: Item) -> tuple[int, int, int]:
    """ONNX Slice's start, end and step for an item, Python's omitted bounds made explicit
    (ONNX clamps them as Python does)."""
    if isinstance(item, int):
        return item, INT64_MAX if item == -1 else item + 1, 1
    forward = item.step > 0
    start = item.start if item.start is not None else (0 if forward else INT64_MAX)
    stop = item.stop if item.stop is not None else (INT64_MAX if forward else INT64_MIN)
    return start, stop, item.step


def cut_size(cut: Cut, size: Dim, d: int) -> Dim:
    """How many positions a slice keeps of a dim, exactly on a known size; on a symbolic one,
    from the bounds measured from the start (>= 0) or from the end (< 0)."""
    if cut.step == 0:
        raise SpecError(f"index: the step of dim {d} is 0")
    if isinstance(size, int):
        n = len(range(*slice(cut.start, cut.stop, cut.step).indices(size)))
        if n == 0:
            raise SpecError(f"index: {cut} keeps nothing of dim {d} of size {size}")
        return n
    if cut.step < 0 and (cut.start is not None or cut.stop is not None):
        raise SpecError(
            f"index: a backward slice of the symbolic dim {size} (dim {d}) takes no bounds",
            hint="write `::-1` (or `::-k`), or slice before reversing",
        )
    step = abs(cut.step)
    start: Dim = _from(cut.start, size, 0)
    stop: Dim = _from(cut.stop, size, size)
    length = dim_add(stop, start, -1)
    if isinstance(length, int) and length <= 0:
        raise SpecError(f"index: {cut} keeps nothing of dim {d}")
    return dim_floordiv(dim_add(length, step - 1), step) if step > 1 else length


def _from(bound: int | None, size: Sym, default: Dim) -> Dim:
    if bound is None:
        return default
    return dim_add(size, bound) if bound < 0 else bound


def flipped(cut: Cut, size: Dim) -> Cut:
    """The forward slice of the reversed dim that takes what a backward slice takes."""
    if not isinstance(size, int):  # cut_size allowed `::-k` only
        return Cut(None, None, -cut.step)
    kept = range(*slice(cut.start, cut.stop, cut.step).indices(size))
    first, last = size - 1 - kept[0], size - 1 - kept[-1]
    start = first or None
    stop = None if last + 1 == size else last + 1
    return Cut(start, stop, -cut.step)
