"""Ops that make a tensor larger by repeating it: expand (broadcast a size-1 dim without copying,
torch's Tensor.expand; a class token to the batch) and tile (copies, torch's Tensor.repeat)."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ir.types import Dim, Sym, TensorType, dim_mul
from dslc.ops.base import Attr, OpDef, register


@register
class Expand(OpDef):
    name = "expand"
    family = "shape"
    doc = (
        "Broadcasts size-1 dims to `shape` (torch's Tensor.expand; new dims may lead). -1 "
        "keeps a dim. A symbolic size such as the batch N is read at run time from `like`, a "
        "tensor that has it: `cls -> expand([N, 1, 768], like=x)`."
    )
    example = "tokens = cls -> expand([N, 1, 768], like=x)"
    inputs = ("x", "like?")
    attrs = (Attr("shape", "shape", doc="the new shape; -1 keeps a dim"),)

    def resolve(self, ins, a):
        x, target = ins[0], list(a["shape"])
        lead = len(target) - x.rank
        if lead < 0:
            raise SpecError(f"expand: shape {_text(target)} has fewer dims than {x}")
        for i, d in enumerate(target):
            if d == -1:
                if i < lead:
                    raise SpecError(f"expand: -1 at new dim {i} of {_text(target)} keeps nothing")
                target[i] = x.shape[i - lead]
            elif isinstance(d, int) and d <= 0:
                raise SpecError(f"expand: dims must be positive or -1, got {d}")
        return {"shape": tuple(target)}

    def infer(self, ins, a):
        x, target = ins[0], a["shape"]
        lead = len(target) - x.rank
        for i, d in enumerate(x.shape):
            if d != 1 and d != target[lead + i]:
                raise SpecError(
                    f"expand: dim {i} of {x} is {d}; only a dim of size 1 expands (to "
                    f"{target[lead + i]})"
                )
        for i, d in enumerate(target):
            if isinstance(d, Sym) and not _kept(x, target, i):
                _position(ins, d)
        return x.with_shape(target)

    def torch_call(self, node, args, module):
        x, target = node.inputs[0].type, node.attrs["shape"]
        dims = []
        for i, d in enumerate(target):
            if _kept(x, target, i):
                dims.append("-1")
            elif isinstance(d, Sym):
                dims.append(f"{args[1]}.shape[{_position(_types(node), d)}]")
            else:
                dims.append(str(d))
        return f"{args[0]}.expand({', '.join(dims)})"

    def onnx(self, node, b, ins, outs):
        """Expand to a shape whose kept dims are 1 (ONNX broadcasts both ways) and whose
        symbolic dims are slices of Shape(like)."""
        x, target = node.inputs[0].type, node.attrs["shape"]
        parts: list[str] = []
        for i, d in enumerate(target):
            if isinstance(d, Sym) and not _kept(x, target, i):
                p = _position(_types(node), d)
                parts.append(
                    b.add(node, "Shape", [ins[1]], [b.temp(node, f"dim{i}")], start=p, end=p + 1)
                )
            else:
                parts.append(b.const(node, f"dim{i}", [1 if _kept(x, target, i) else d], "i64"))
        shape = b.add(node, "Concat", parts, [b.temp(node, "shape")], axis=0)
        b.add(node, "Expand", [ins[0], shape], outs)


def _kept(x: TensorType, target, i: int) -> bool:
    """Whether dim i of the target shape is the input's own (its trailing dims line up)."""
    lead = len(target) - x.rank
    return i >= lead and x.shape[i - lead] == target[i]


def _types(node) -> list[TensorType]:
    return [v.type for v in node.inputs]


def _position(ins: list[TensorType], d: Sym) -> int:
    """Where `like` has the symbolic size d."""
    like = ins[1] if len(ins) > 1 else None
    if like is None or d not in like.shape:
        raise SpecError(
            f"expand: the symbolic size {d} is known at run time only; name a tensor that has "
            f"it as `like=`",
            hint=f"for example `expand([{d}, ...], like=x)` with x an input of shape ({d}, ...)",
        )
    return like.shape.index(d)


def _text(shape: list[Dim]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


@register
class Tile(OpDef):
    name = "tile"
    family = "shape"
    doc = (
        "Repeats a tensor `reps[i]` times along each dim i, copying (torch's Tensor.repeat, "
        "numpy's tile); one number per dim."
    )
    example = "x -> tile([1, 2, 1])"
    attrs = (Attr("reps", "ints", doc="copies along each dim", positive=True),)

    def resolve(self, ins, a):
        reps = (a["reps"],) if isinstance(a["reps"], int) else tuple(a["reps"])
        if len(reps) != ins[0].rank:
            raise SpecError(f"tile: {len(reps)} repeats for the rank-{ins[0].rank} input {ins[0]}")
        return {"reps": reps}

    def infer(self, ins, a):
        x = ins[0]
        return x.with_shape([dim_mul(d, r) for d, r in zip(x.shape, a["reps"], strict=True)])

    def torch_call(self, node, args, module):
        return f"{args[0]}.repeat({', '.join(map(str, node.attrs['reps']))})"

    def onnx(self, node, b, ins, outs):
        b.add(node, "Tile", [ins[0], b.const(node, "reps", list(node.attrs["reps"]), "i64")], outs)
