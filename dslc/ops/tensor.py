"""Tensor ops for writing attention by hand: transpose, permute, split and matmul."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ir.types import Dim, Sym, TensorType, dim_add, dim_prod
from dslc.ops.base import Attr, OpDef, expect_float, norm_axis, register
from dslc.ops.index import INT64_MAX


def _permuted(x: TensorType, perm: list[int]) -> TensorType:
    return x.with_shape([x.shape[i] for i in perm])


def _ints_first(dims: list[Dim]) -> Dim:
    """The product with the numbers first, so a MAC count reads (32*T)*T, not 8*(4*T)*T."""
    return dim_prod(sorted(dims, key=lambda d: not isinstance(d, int)))


def _swap(rank: int, a: dict) -> list[int]:
    """The permutation that swaps dims dim0 and dim1."""
    perm = list(range(rank))
    perm[a["dim0"]], perm[a["dim1"]] = perm[a["dim1"]], perm[a["dim0"]]
    return perm


@register
class Transpose(OpDef):
    name = "transpose"
    family = "shape"
    doc = "Swaps two dims (torch.transpose); negative dims count from the end."
    example = "k -> transpose(-2, -1)"
    attrs = (
        Attr("dim0", "int", doc="one dim to swap"),
        Attr("dim1", "int", doc="the other"),
    )

    def resolve(self, ins, a):
        r = ins[0].rank
        return {k: norm_axis(self.name, a[k], r) for k in ("dim0", "dim1")}

    def positions(self, node, flow):
        return flow.moves(node, tuple(self.dim_origins(node)))

    def infer(self, ins, a):
        return _permuted(ins[0], _swap(ins[0].rank, a))

    def dim_origins(self, node):
        return _swap(node.inputs[0].type.rank, node.attrs)

    def torch_call(self, node, args, module):
        return f"{args[0]}.transpose({node.attrs['dim0']}, {node.attrs['dim1']})"

    def onnx(self, node, b, ins, outs):
        b.add(node, "Transpose", ins, outs, perm=_swap(node.inputs[0].type.rank, node.attrs))


@register
class Permute(OpDef):
    name = "permute"
    family = "shape"
    doc = (
        "Reorders all dims (torch.permute): output dim i is input dim dims[i]; negative dims "
        "count from the end."
    )
    example = "x -> permute([0, 2, 1, 3])"
    attrs = (Attr("dims", "ints", doc="a permutation of the input's dims"),)

    def resolve(self, ins, a):
        x, dims = ins[0], a["dims"]
        dims = (dims,) if isinstance(dims, int) else dims
        if len(dims) != x.rank:
            raise SpecError(
                f"permute: dims {list(dims)} has {len(dims)} entries but the input {x} has "
                f"rank {x.rank}",
                hint=f"list every dim once, such as {list(reversed(range(x.rank)))}",
            )
        perm = tuple(norm_axis(self.name, d, x.rank) for d in dims)
        twice = sorted({d for d in perm if perm.count(d) > 1})
        if twice:
            raise SpecError(
                f"permute: dims {list(dims)} is not a permutation: dim {twice[0]} appears twice"
            )
        return {"dims": perm}

    def positions(self, node, flow):
        return flow.moves(node, tuple(self.dim_origins(node)))

    def infer(self, ins, a):
        return _permuted(ins[0], list(a["dims"]))

    def dim_origins(self, node):
        return list(node.attrs["dims"])

    def torch_call(self, node, args, module):
        return f"{args[0]}.permute({', '.join(map(str, node.attrs['dims']))})"

    def onnx(self, node, b, ins, outs):
        b.add(node, "Transpose", ins, outs, perm=list(node.attrs["dims"]))


@register
class Split(OpDef):
    name = "split"
    family = "shape"
    doc = (
        "Cuts a tensor along axis into several: `sections` equal parts, or parts of the listed "
        "sizes, of which one may be -1 (the rest of the dim) or symbolic (`[1, T - 1]`), so that "
        "a symbolic dim can be cut too. Unpack them: `q, k, v = h -> split(3)`."
    )
    example = "q, k, v = h -> split(3, axis=-1)"
    attrs = (
        Attr(
            "sections",
            "sizes",
            doc="how many equal parts (the dim must divide), or the size of each part",
        ),
        Attr("axis", "int", -1, "the dim to cut"),
    )

    def resolve(self, ins, a):
        """`sections` becomes the size of each part, so the IR says what each output holds."""
        x = ins[0]
        axis = norm_axis(self.name, a["axis"], x.rank)
        return {"sections": _sizes(x, axis, a["sections"]), "axis": axis}

    def positions(self, node, flow):
        return flow.cuts(node, node.attrs["axis"])

    def infer(self, ins, a):
        x, axis = ins[0], a["axis"]
        total: Dim = 0
        for s in a["sections"]:
            total = dim_add(total, s)
        if total != x.shape[axis]:  # resolve checked this; verify re-checks it
            raise SpecError(f"split: sizes {_listed(a['sections'])} do not fit {x}")
        return [x.with_shape((*x.shape[:axis], s, *x.shape[axis + 1 :])) for s in a["sections"]]

    def torch_call(self, node, args, module):
        axis, sizes = node.attrs["axis"], node.attrs["sections"]
        known = sum(s for s in sizes if isinstance(s, int))
        rest = f"{args[0]}.shape[{axis}] - {known}" if known else f"{args[0]}.shape[{axis}]"
        listed = ", ".join(str(s) if isinstance(s, int) else rest for s in sizes)
        call = f"torch.split({args[0]}, [{listed}], dim={axis})"
        return call if len(sizes) > 1 else f"{call}[0]"  # one part: a tensor, not a 1-tuple

    def onnx(self, node, b, ins, outs):
        axis, sizes = node.attrs["axis"], node.attrs["sections"]
        if all(isinstance(s, int) for s in sizes):
            b.add(
                node, "Split", [ins[0], b.const(node, "split", list(sizes), "i64")], outs, axis=axis
            )
            return
        # one part of symbolic size: the parts before it measured from the start, those after
        # it from the end, each a Slice
        j = next(i for i, s in enumerate(sizes) if not isinstance(s, int))
        axes = b.const(node, "axis", [axis], "i64")
        for i, out in enumerate(outs):
            start = sum(sizes[:i]) if i <= j else -sum(sizes[i:])
            end = sum(sizes[: i + 1]) if i < j else (-sum(sizes[i + 1 :]) or INT64_MAX)
            bounds = [
                b.const(node, f"part{i}_{k}", [v], "i64")
                for k, v in (("start", start), ("end", end))
            ]
            b.add(node, "Slice", [ins[0], *bounds, axes], [out])


def _listed(sizes) -> str:
    return "[" + ", ".join(map(str, sizes)) + "]"


def _sizes(x: TensorType, axis: int, sections) -> tuple[Dim, ...]:
    size = x.shape[axis]
    if isinstance(sections, int):
        return _equal(x, axis, sections)
    if any(isinstance(s, int) and s <= 0 and s != -1 for s in sections):
        raise SpecError(f"split: part sizes must be positive (or one -1), got {_listed(sections)}")
    open_parts = [i for i, s in enumerate(sections) if s == -1 or isinstance(s, Sym)]
    if len(open_parts) > 1:
        raise SpecError(
            f"split: at most one part may be -1 or symbolic, got {_listed(sections)}",
            hint="give every other part a fixed size",
        )
    known = sum(s for s in sections if isinstance(s, int) and s != -1)
    if open_parts and sections[open_parts[0]] == -1:
        rest = dim_add(size, known, -1)
        if isinstance(rest, int) and rest <= 0:
            raise SpecError(f"split: sizes {_listed(sections)} leave nothing for -1 of {x}")
        sections = [rest if s == -1 else s for s in sections]
    total: Dim = 0
    for s in sections:
        total = dim_add(total, s)
    if total != size:
        raise SpecError(
            f"split: sizes {_listed(sections)} sum to {total} but dim {axis} of {x} has "
            f"size {size}",
            hint="write -1 for the part that takes the rest",
        )
    return tuple(sections)


def _equal(x: TensorType, axis: int, sections: int) -> tuple[int, ...]:
    size = x.shape[axis]
    if sections <= 0:
        raise SpecError(f"split: sections must be positive, got {sections}")
    if not isinstance(size, int):
        raise SpecError(
            f"split: dim {axis} of {x} is the symbolic {size}; equal parts need a known size",
            hint="list the parts' sizes with one -1 for the rest: `split([1, -1], axis=1)`",
        )
    if size % sections:
        raise SpecError(
            f"split: dim {axis} of {x} has size {size}, which does not divide into "
            f"{sections} equal parts",
            hint=f"make the dim a multiple of {sections}, or list the parts' sizes (summing "
            f"to {size})",
        )
    return (size // sections,) * sections


@register
class Matmul(OpDef):
    name = "matmul"
    family = "dense"
    doc = (
        "Matrix product of two tensors (torch.matmul) over their last two dims, (..., T, E) "
        "times (..., E, S) gives (..., T, S); the leading dims broadcast. Written "
        "`matmul(q, kt)`; both must have rank 2 or more."
    )
    example = "scores = matmul(q, kt)"
    inputs = ("a", "b")

    def positions(self, node, flow):
        return flow.multiplies(node)

    def infer(self, ins, a):
        x, y = ins
        for name, t in (("first", x), ("second", y)):
            expect_float(self.name, t)
            if t.rank < 2:
                raise SpecError(
                    f"matmul: the {name} input {t} has rank {t.rank}; both need rank 2 or more",
                    hint="reshape a vector to a (1, n) or (n, 1) matrix first",
                )
        if x.dtype != y.dtype:
            raise SpecError(f"matmul: dtypes differ: {x} and {y}")
        if x.shape[-1] != y.shape[-2]:
            raise SpecError(
                f"matmul: inner dims differ: the first input {x} has {x.shape[-1]} columns but "
                f"the second {y} has {y.shape[-2]} rows",
                hint="the first input's last dim must equal the second's next-to-last; "
                "transpose(-2, -1) swaps a tensor's last two dims",
            )
        batch = _broadcast(x.shape[:-2], y.shape[:-2], x, y)
        return x.with_shape((*batch, x.shape[-2], y.shape[-1]))

    def macs(self, node):
        """One multiply-accumulate per output element and inner index."""
        return _ints_first([node.inputs[0].type.shape[-1], *node.output.type.shape[1:]])

    def torch_call(self, node, args, module):
        return f"{args[0]} @ {args[1]}"

    def onnx(self, node, b, ins, outs):
        b.add(node, "MatMul", ins, outs)


def _broadcast(p: tuple[Dim, ...], q: tuple[Dim, ...], x: TensorType, y: TensorType) -> list[Dim]:
    """The leading (batch) dims of a matmul, broadcast as in elementwise ops."""
    out: list[Dim] = []
    for i in range(1, max(len(p), len(q)) + 1):
        d = p[-i] if i <= len(p) else 1
        e = q[-i] if i <= len(q) else 1
        if d != e and d != 1 and e != 1:
            raise SpecError(
                f"matmul: the leading dims of {x} and {y} do not broadcast ({d} vs {e})"
            )
        out.append(e if d == 1 else d)
    return out[::-1]
