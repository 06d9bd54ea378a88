"""Ops that move data without computing on it: flatten, reshape, concat."""

from __future__ import annotations

from collections import Counter
from typing import cast

from dslc.diagnostics import SpecError
from dslc.ir.types import DTYPES, Dim, Sym, TensorType, dim_add, dim_prod
from dslc.ops.base import Attr, OpDef, norm_axis, register
from dslc.ops.pycode import attr, ctor


@register
class Flatten(OpDef):
    name = "flatten"
    family = "shape"
    doc = "Merges dims start..last into one: (N, C, H, W) -> (N, C*H*W) with the default start=1."
    example = "x -> flatten"
    attrs = (Attr("start", "int", 1, "first dim to merge"),)

    def resolve(self, ins, a):
        return {"start": norm_axis(self.name, a["start"], max(ins[0].rank, 1))}

    def positions(self, node, flow):
        return flow.reshapes(node)

    def infer(self, ins, a):
        (x,) = ins
        return x.with_shape((*x.shape[: a["start"]], dim_prod(x.shape[a["start"] :])))

    def torch_call(self, node, args, module):
        return f"torch.flatten({args[0]}, {node.attrs['start']})"

    def torch_layer(self, node):
        return ctor("nn.Flatten", attr(node, "start", default=1))

    def onnx(self, node, b, ins, outs):
        start = node.attrs["start"]
        if start == 1:
            b.add(node, "Flatten", ins, outs, axis=1)
            return
        shape = b.const(node, "shape", [0] * start + [-1], "i64")
        b.add(node, "Reshape", [ins[0], shape], outs)


@register
class Reshape(OpDef):
    name = "reshape"
    family = "shape"
    doc = (
        "Reshapes to `shape` (the whole shape, batch included). -1 is inferred from the rest; a "
        "symbolic dim such as N must sit at the same position in the input."
    )
    example = "x -> reshape([N, 16, 5, 5])"
    attrs = (Attr("shape", "shape", doc="target shape"),)

    def positions(self, node, flow):
        return flow.reshapes(node)

    def infer(self, ins, a):
        (x,) = ins
        target = list(a["shape"])
        for i, d in enumerate(target):
            if isinstance(d, Sym) and (i >= x.rank or x.shape[i] != d):
                raise SpecError(
                    f"reshape: symbolic dim {d} must be at position {i} of the input {x} too"
                )
            if isinstance(d, int) and d < -1 or d == 0:
                raise SpecError(f"reshape: dims must be positive or -1, got {d}")
        holes = [i for i, d in enumerate(target) if d == -1]
        if len(holes) > 1:
            raise SpecError("reshape: at most one dim can be -1")
        if holes:
            target[holes[0]] = _infer_hole(x, [d for d in target if d != -1])
        elif _known_size(x.shape) != _known_size(target):
            raise SpecError(
                f"reshape: cannot reshape {x} to {x.with_shape(target).shape_str()}: sizes differ"
            )
        return x.with_shape(target)

    def torch_call(self, node, args, module):
        dims = [
            f"{args[0]}.shape[{i}]" if isinstance(d, Sym) else str(d)
            for i, d in enumerate(node.attrs["shape"])
        ]
        return f"{args[0]}.reshape({', '.join(dims)})"

    def onnx(self, node, b, ins, outs):
        shape = b.const(
            node, "shape", [0 if isinstance(d, Sym) else d for d in node.attrs["shape"]], "i64"
        )
        b.add(node, "Reshape", [ins[0], shape], outs)


def _known_size(shape) -> tuple[int, tuple[str, ...]]:
    """(product of the int dims, sorted symbolic dims): two shapes with equal values hold the same
    number of elements."""
    ints = [d for d in shape if isinstance(d, int)]
    syms = tuple(sorted(str(d) for d in shape if not isinstance(d, int)))
    return cast(int, dim_prod(ints)), syms  # a product of ints is an int


def _infer_hole(x: TensorType, rest: list[Dim]) -> Dim:
    """The -1 dim: the input's size over the rest's, cancelling symbolic dims that both have."""
    (n_in, s_in), (n_out, s_out) = _known_size(x.shape), _known_size(rest)
    left = Counter(s_in)
    left.subtract(s_out)
    if any(c < 0 for c in left.values()):
        return Sym(text=f"({dim_prod(x.shape)})/({dim_prod(rest)})")
    if n_in % n_out:
        raise SpecError(
            f"reshape: {x} does not divide into {x.with_shape(rest).shape_str()} and -1"
        )
    syms = [d for d in x.shape if not isinstance(d, int)]
    kept: list[Dim] = []
    for d in syms:
        if left[str(d)] > 0:
            left[str(d)] -= 1
            kept.append(d)
    return dim_prod([n_in // n_out, *kept])


@register
class Concat(OpDef):
    name = "concat"
    family = "shape"
    doc = "Joins a list of tensors along axis; every other dim must agree."
    example = "[a, b, c] -> concat(axis=1)"
    inputs = ("*xs",)
    attrs = (Attr("axis", "int", 1, "the dim to join along"),)

    def resolve(self, ins, a):
        return {"axis": norm_axis(self.name, a["axis"], ins[0].rank)}

    def positions(self, node, flow):
        return flow.cuts(node, node.attrs["axis"])

    def infer(self, ins, a):
        axis, first = a["axis"], ins[0]
        total: Dim = 0
        for i, t in enumerate(ins):
            if t.dtype != first.dtype or t.rank != first.rank:
                raise SpecError(f"concat: input {i} is {t} but input 0 is {first}")
            for d, (p, q) in enumerate(zip(t.shape, first.shape, strict=True)):
                if d != axis and p != q:
                    raise SpecError(
                        f"concat along axis {axis}: input {i} has shape {t.shape_str()} "
                        "but input 0 has "
                        f"{first.shape_str()} (dim {d} differs)"
                    )
            total = dim_add(total, t.shape[axis])
        return first.with_shape((*first.shape[:axis], total, *first.shape[axis + 1 :]))

    def torch_call(self, node, args, module):
        return f"torch.cat([{', '.join(args)}], dim={node.attrs['axis']})"

    def onnx(self, node, b, ins, outs):
        b.add(node, "Concat", ins, outs, axis=node.attrs["axis"])


@register
class Identity(OpDef):
    name = "identity"
    family = "shape"
    doc = (
        "Passes its input on unchanged (torch.nn.Identity's role); a placeholder stage, or a new "
        "name for a tensor."
    )
    example = "x -> identity"

    def positions(self, node, flow):
        return flow.same(node, keeps="identity")

    def infer(self, ins, a):
        return ins[0]

    def torch_call(self, node, args, module):
        return args[0]

    def torch_layer(self, node):
        return ctor("nn.Identity")

    def onnx(self, node, b, ins, outs):
        b.alias(outs[0], ins[0])


@register
class Squeeze(OpDef):
    name = "squeeze"
    family = "shape"
    doc = "Removes dim `axis`, which must have size 1 (torch.squeeze)."
    example = "x -> squeeze(1)"
    attrs = (Attr("axis", "int", doc="the dim of size 1 to remove"),)

    def resolve(self, ins, a):
        return {"axis": norm_axis(self.name, a["axis"], ins[0].rank)}

    def positions(self, node, flow):
        return flow.removes(node, node.attrs["axis"])

    def infer(self, ins, a):
        (x,) = ins
        if x.shape[a["axis"]] != 1:
            raise SpecError(f"squeeze: dim {a['axis']} of {x} has size {x.shape[a['axis']]}, not 1")
        return x.with_shape(x.shape[: a["axis"]] + x.shape[a["axis"] + 1 :])

    def torch_call(self, node, args, module):
        return f"{args[0]}.squeeze({node.attrs['axis']})"

    def onnx(self, node, b, ins, outs):
        b.add(node, "Squeeze", [ins[0], b.const(node, "axes", [node.attrs["axis"]], "i64")], outs)


@register
class Unsqueeze(OpDef):
    name = "unsqueeze"
    family = "shape"
    doc = "Inserts a dim of size 1 at `axis` of the output (torch.unsqueeze)."
    example = "x -> unsqueeze(1)"
    attrs = (Attr("axis", "int", doc="where the new dim stands in the output"),)

    def resolve(self, ins, a):
        return {"axis": norm_axis(self.name, a["axis"], ins[0].rank + 1)}

    def positions(self, node, flow):
        return flow.inserts(node, node.attrs["axis"])

    def infer(self, ins, a):
        (x,) = ins
        return x.with_shape((*x.shape[: a["axis"]], 1, *x.shape[a["axis"] :]))

    def torch_call(self, node, args, module):
        return f"{args[0]}.unsqueeze({node.attrs['axis']})"

    def onnx(self, node, b, ins, outs):
        axes = b.const(node, "axes", [node.attrs["axis"]], "i64")
        b.add(node, "Unsqueeze", [ins[0], axes], outs)


@register
class Cast(OpDef):
    name = "cast"
    family = "shape"
    doc = "The tensor in another dtype (Tensor.to): f32 of a bool mask, i64 of floats (truncated)."
    example = 'm = mask -> cast("f32")'
    attrs = (Attr("dtype", "str", doc="the new dtype", choices=tuple(DTYPES)),)

    def positions(self, node, flow):
        return flow.same(node)

    def infer(self, ins, a):
        return TensorType(a["dtype"], ins[0].shape)

    def torch_call(self, node, args, module):
        return f"{args[0]}.to(torch.{DTYPES[node.attrs['dtype']][1]})"

    def onnx(self, node, b, ins, outs):
        b.add(node, "Cast", ins, outs, to=ONNX_TYPES[node.attrs["dtype"]])


# TensorProto's element types, by number, so that ops need not import onnx
ONNX_TYPES = {"f16": 10, "bf16": 16, "f32": 1, "f64": 11, "i32": 6, "i64": 7, "bool": 9}
