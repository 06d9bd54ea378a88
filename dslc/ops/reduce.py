"""Reductions over chosen axes: mean, sum, max, min (with keepdim), argmax, and the mean over
the positions a padding mask keeps (a sentence's real tokens)."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ir.types import INT_DTYPES, TensorType
from dslc.ops.base import Attr, OpDef, expect_f32, expect_float, norm_axis, register
from dslc.ops.pycode import tensor_method

AXES = Attr("axis", "ints", doc="the dim, or the dims, to reduce; negative counts from the end")
KEEPDIM = Attr("keepdim", "bool", False, "keep each reduced dim, with size 1")


def reduced(x: TensorType, axes: tuple[int, ...], keep: bool) -> TensorType:
    if keep:
        return x.with_shape([1 if i in axes else d for i, d in enumerate(x.shape)])
    return x.with_shape([d for i, d in enumerate(x.shape) if i not in axes])


def _axes(op: str, x: TensorType, axis) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    norm = tuple(sorted({norm_axis(op, a, x.rank) for a in axes}))
    if len(norm) != len(axes):
        raise SpecError(f"{op}: axis {list(axes)} names a dim twice")
    return norm


class Reduce(OpDef):
    family = "shape"
    attrs = (AXES, KEEPDIM)
    method: str  # the torch.Tensor method
    onnx_op: str

    def resolve(self, ins, a):
        return {**a, "axis": _axes(self.name, ins[0], a["axis"])}

    def positions(self, node, flow):
        return flow.reduces(node, node.attrs["axis"], node.attrs["keepdim"])

    def infer(self, ins, a):
        expect_float(self.name, ins[0])
        return reduced(ins[0], a["axis"], a["keepdim"])

    def torch_call(self, node, args, module):
        return tensor_method(args[0], self.method, node.attrs["axis"], node.attrs["keepdim"])

    def onnx(self, node, b, ins, outs):
        axes = b.const(node, "axes", list(node.attrs["axis"]), "i64")
        b.add(node, self.onnx_op, [ins[0], axes], outs, keepdims=int(node.attrs["keepdim"]))


for _name, _method, _op, _what in (
    ("mean", "mean", "ReduceMean", "The mean"),
    ("sum", "sum", "ReduceSum", "The sum"),
    ("max", "amax", "ReduceMax", "The maximum"),
    ("min", "amin", "ReduceMin", "The minimum"),
):
    register(
        type(
            f"Reduce{_op[6:]}",
            (Reduce,),
            {
                "name": _name,
                "method": _method,
                "onnx_op": _op,
                "doc": f"{_what} over `axis` (torch.Tensor.{_method}).",
                "example": f"x -> {_name}(axis=1)",
            },
        )
    )


@register
class Argmax(OpDef):
    name = "argmax"
    family = "shape"
    doc = "The index of the largest value along `axis` (the first, on ties), as i64."
    example = "classes = logits -> argmax(axis=1)"
    attrs = (Attr("axis", "int", doc="the dim to search"), KEEPDIM)

    def resolve(self, ins, a):
        return {**a, "axis": norm_axis(self.name, a["axis"], ins[0].rank)}

    def positions(self, node, flow):
        return flow.reduces(node, (node.attrs["axis"],), node.attrs["keepdim"])

    def infer(self, ins, a):
        expect_float(self.name, ins[0])
        return TensorType("i64", reduced(ins[0], (a["axis"],), a["keepdim"]).shape)

    def torch_call(self, node, args, module):
        return tensor_method(args[0], "argmax", (node.attrs["axis"],), node.attrs["keepdim"])

    def onnx(self, node, b, ins, outs):
        a = node.attrs
        b.add(node, "ArgMax", ins, outs, axis=a["axis"], keepdims=int(a["keepdim"]))


MASKED_MEAN = """
def masked_mean(x, mask, dim):
    \"\"\"The mean of x over `dim` at the positions `mask` (x's leading dims) keeps; zeros
    where it keeps none.\"\"\"
    keep = mask.to(x.dtype).reshape(*mask.shape, *[1] * (x.dim() - mask.dim()))
    return (x * keep).sum(dim=dim) / keep.sum(dim=dim).clamp(min=1)
"""


@register
class MaskedMean(OpDef):
    name = "masked_mean"
    family = "shape"
    doc = (
        "The mean over `axis` of the positions a mask keeps: x (N, T, ...) and a mask (N, T) "
        "of bool or 0/1 integers, the mask's dims the first of x's; a row the mask keeps none "
        "of gives zeros."
    )
    example = "sentence = masked_mean(words, mask, axis=1)"
    inputs = ("x", "mask")
    attrs = (Attr("axis", "int", 1, "the dim to average over: the mask's last"),)

    def resolve(self, ins, a):
        return {"axis": norm_axis(self.name, a["axis"], ins[0].rank)}

    def infer(self, ins, a):
        x, mask = ins
        expect_f32(self.name, x)
        if mask.dtype not in ("bool", *INT_DTYPES) or mask.shape != x.shape[: mask.rank]:
            raise SpecError(
                f"masked_mean: the mask must be bool or integer of shape "
                f"{x.with_shape(x.shape[: a['axis'] + 1]).shape_str()}, got {mask}"
            )
        if mask.rank != a["axis"] + 1:
            raise SpecError(
                f"masked_mean: axis {a['axis']} must be the mask's last dim, got {mask}"
            )
        return reduced(x, (a["axis"],), False)

    torch_helpers = {"masked_mean": MASKED_MEAN}

    def torch_call(self, node, args, module):
        return f"masked_mean({args[0]}, {args[1]}, dim={node.attrs['axis']})"

    def onnx(self, node, b, ins, outs):
        extra = node.inputs[0].type.rank - node.inputs[1].type.rank
        keep = b.add(node, "Cast", [ins[1]], [b.temp(node, "keep")], to=1)  # FLOAT
        if extra:
            axes = b.const(node, "expand_axes", list(range(-extra, 0)), "i64")
            keep = b.add(node, "Unsqueeze", [keep, axes], [b.temp(node, "keep_nd")])
        axis = b.const(node, "axes", [node.attrs["axis"]], "i64")
        kept = b.add(node, "Mul", [ins[0], keep], [b.temp(node, "kept")])
        total = b.add(node, "ReduceSum", [kept, axis], [b.temp(node, "total")], keepdims=0)
        count = b.add(node, "ReduceSum", [keep, axis], [b.temp(node, "count")], keepdims=0)
        count = b.add(node, "Max", [count, b.const(node, "one", 1.0, "f32")], [b.temp(node, "n")])
        b.add(node, "Div", [total, count], outs)
