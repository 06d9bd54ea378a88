"""Picking elements by the data: the k largest (or smallest) along an axis with their indices,
and the elements at given indices. A detector's selection steps (the best anchors of a level,
the boxes NMS kept) in a spec of its own; ONNX's TopK and Gather."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ir.types import INT_DTYPES, TensorType
from dslc.ops.base import Attr, OpDef, norm_axis, register

TOPK = '''
def topk(x, k, dim=-1, largest=True):
    """The k largest (smallest) values along dim, best first, and their indices; equal values
    by index, as ONNX's TopK orders them (torch.topk leaves the order of ties unspecified)."""
    values, indices = x.sort(dim=dim, descending=largest, stable=True)
    return values.narrow(dim, 0, k), indices.narrow(dim, 0, k)
'''


@register
class TopK(OpDef):
    name = "topk"
    family = "detection"
    doc = (
        "The k largest values along `axis` (the k smallest with largest=false), best first, "
        "and their indices (i64): two outputs, the values leading, so `x -> topk(5)` is the "
        "values and `values, index = x -> topk(5)` names both. Equal values come by index, "
        "lowest first (ONNX TopK's order). k larger than a known axis is an error; on a "
        "symbolic axis k is assumed to fit, and a shorter one fails at run time."
    )
    example = "scores, index = objectness -> topk(1000, axis=1)"
    attrs = (
        Attr("k", "int", doc="how many values to keep", positive=True),
        Attr("axis", "int", -1, "the dim to search; negative counts from the end"),
        Attr("largest", "bool", True, "false: the k smallest, smallest first"),
    )
    leading_output = True

    def resolve(self, ins, a):
        return {**a, "axis": norm_axis(self.name, a["axis"], ins[0].rank)}

    def infer(self, ins, a):
        (x,), axis, k = ins, a["axis"], a["k"]
        if x.dtype == "bool":
            raise SpecError(f"topk needs numbers, got {x}", hint="cast it first: x -> cast(f32)")
        size = x.shape[axis]
        if isinstance(size, int) and k > size:
            raise SpecError(
                f"topk: k={k} is more than the {size} values along axis {axis} of {x}",
                hint=f"k is at most {size} here",
            )
        shape = (*x.shape[:axis], k, *x.shape[axis + 1 :])
        return [x.with_shape(shape), TensorType("i64", shape)]

    torch_helpers = {"topk": TOPK}

    def torch_call(self, node, args, module):
        a, rank = node.attrs, node.inputs[0].type.rank
        given = [args[0], str(a["k"])]
        given += [] if a["axis"] == rank - 1 else [f"dim={a['axis']}"]
        given += [] if a["largest"] else ["largest=False"]
        return f"topk({', '.join(given)})"

    def onnx(self, node, b, ins, outs):
        a = node.attrs
        k = b.const(node, "k", [a["k"]], "i64")
        b.add(node, "TopK", [ins[0], k], outs, axis=a["axis"], largest=int(a["largest"]))


@register
class Gather(OpDef):
    name = "gather"
    family = "detection"
    doc = (
        "The elements of x at the positions `index` (integers of any shape) along `axis`, "
        "ONNX Gather's meaning: the result is x.shape[:axis] + index.shape + "
        "x.shape[axis + 1:], and a negative index counts from the end. PyTorch writes it "
        "`x[index]` (axis 0) or `x[:, index]`. The boxes NMS kept: `gather(boxes, keep)`."
    )
    example = "kept = gather(boxes, keep)"
    inputs = ("x", "index")
    attrs = (Attr("axis", "int", 0, "the dim the index picks along; negative from the end"),)

    def resolve(self, ins, a):
        return {**a, "axis": norm_axis(self.name, a["axis"], ins[0].rank)}

    def infer(self, ins, a):
        x, index = ins
        if index.dtype not in INT_DTYPES:
            raise SpecError(
                f"gather: the index must be integers (i64 or i32), got {index}",
                hint="indices from nms, topk or argmax are i64",
            )
        axis = a["axis"]
        return x.with_shape((*x.shape[:axis], *index.shape, *x.shape[axis + 1 :]))

    def torch_call(self, node, args, module):
        x, index = args
        return f"{x}[{':, ' * node.attrs['axis']}{index}]"

    def onnx(self, node, b, ins, outs):
        b.add(node, "Gather", ins, outs, axis=node.attrs["axis"])
