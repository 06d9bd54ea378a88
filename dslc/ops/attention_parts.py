"""Attention from parts: a causal mask for hand-written attention scores, and scaled dot-product
attention over heads that the spec has already split (q, k, v of shape (N, H, T, E))."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from dslc.diagnostics import SpecError
from dslc.ir.types import TensorType, dim_add, dim_prod
from dslc.ops.base import Attr, OpDef, expect_float, register

if TYPE_CHECKING:
    from dslc.backends.onnx.builder import OnnxBuilder
    from dslc.ir.graph import Node

SDPA = "scaled_dot_product_attention"


def upper_mask(node: Node, b: OnnxBuilder, ref: str, aligned: bool = False) -> str:
    """ONNX: a bool (T, S) mask, true above the diagonal (column j > row i), built at run time
    from the last two dims of `ref`, which may be symbolic. `aligned`: the diagonal ends at
    the last key (j > i + S - T), for queries that are the last T of S positions (a cache)."""
    shape = b.add(node, "Shape", [ref], [b.temp(node, "ts")], start=-2)
    ones = _ones(node, b, shape, "ones")
    k = b.const(node, "diagonal", 1, "i64")
    if aligned:  # 1 + S - T
        s = b.add(node, "Shape", [ref], [b.temp(node, "s")], start=-1)
        t = b.add(node, "Shape", [ref], [b.temp(node, "t")], start=-2, end=-1)
        k = _diagonal(node, b, t, s, k)
    return b.add(node, "Trilu", [ones, k], [b.temp(node, "upper")], upper=1)


def lower_right(node: Node, b: OnnxBuilder, q: str, k: str) -> str:
    """ONNX: bool (T, S), true where key j may be seen by query i, the queries being the last
    T of the S positions: j <= i + S - T (PyTorch's causal_lower_right): the complement of
    upper_mask's aligned mask, from q (N, H, T, E) and k (N, H, S, E)."""
    t = b.add(node, "Shape", [q], [b.temp(node, "queries")], start=2, end=3)
    s = b.add(node, "Shape", [k], [b.temp(node, "keys")], start=2, end=3)
    ts = b.add(node, "Concat", [t, s], [b.temp(node, "lower_shape")], axis=0)
    ones = _ones(node, b, ts, "lower_ones")
    return b.add(node, "Trilu", [ones, _diagonal(node, b, t, s)], [b.temp(node, "lower")], upper=0)


def _ones(node: Node, b: OnnxBuilder, shape: str, name: str) -> str:
    from onnx import TensorProto, helper  # only the ONNX backend needs onnx

    true = helper.make_tensor("value", TensorProto.BOOL, [1], [True])
    return b.add(node, "ConstantOfShape", [shape], [b.temp(node, name)], value=true)


def _diagonal(node: Node, b: OnnxBuilder, t: str, s: str, plus: str | None = None) -> str:
    """Trilu's k for queries that are the last T of S positions: S - T (+ `plus`), a scalar
    from the (1,) lengths t and s."""
    k = b.add(node, "Sub", [s, t], [b.temp(node, "past")])
    if plus is not None:
        k = b.add(node, "Add", [k, plus], [b.temp(node, "diagonal_1d")])
    return b.add(node, "Squeeze", [k], [b.temp(node, "diagonal")])


def neg_inf(node: Node, b: OnnxBuilder, dtype: str) -> str:
    return b.const(node, "neg_inf", -math.inf, dtype)


CAUSAL_MASK = '''
def causal_mask(scores):
    """-inf where key j comes after query i, the queries being the last t of the s positions
    (fewer while KVCache decodes), so that a softmax gives the later keys weight 0."""
    t, s = scores.shape[-2:]
    later = torch.ones(t, s, dtype=torch.bool, device=scores.device).triu(1 + s - t)
    return scores.masked_fill(later, float("-inf"))
'''


@register
class CausalMask(OpDef):
    name = "causal_mask"
    family = "attention"
    doc = (
        "Sets attention scores (..., T, S) to -inf where key j comes after query i, so a softmax "
        "over the last dim gives them weight 0: each position sees only itself and earlier "
        "ones. The queries are the last T of the S positions (T = S but in a decoder with a "
        "cache): key j is hidden where j > i + S - T."
    )
    example = "weights = scores -> causal_mask -> softmax"
    torch_helpers = {"causal_mask": CAUSAL_MASK}

    def positions(self, node, flow):
        return flow.masks(node)

    def infer(self, ins, a):
        (x,) = ins
        expect_float(self.name, x)
        if x.rank < 2:
            raise SpecError(f"causal_mask expects scores (..., T, S) of rank 2 or more, got {x}")
        return x

    def torch_call(self, node, args, module):
        return f"causal_mask({args[0]})"

    def onnx(self, node, b, ins, outs):
        t, s = node.inputs[0].type.shape[-2:]
        upper = upper_mask(node, b, ins[0], aligned=b.kv is not None or t != s)
        b.add(node, "Where", [upper, neg_inf(node, b, node.inputs[0].type.dtype), ins[0]], outs)


@register
class ScaledDotProductAttention(OpDef):
    name = SDPA
    family = "attention"
    prefix = "sdpa"
    doc = (
        "softmax(q k^T * scale + mask) v over heads already split (F.scaled_dot_product_attention):"
        " q (N, H, T, E), k (N, H, S, E), v (N, H, S, Ev) give (N, H, T, Ev). The optional bool "
        "`mask` broadcasts to (N, H, T, S); true means attend."
    )
    example = "y = scaled_dot_product_attention(q, k, v, causal=true)"
    inputs = ("q", "k", "v", "mask?")
    attrs = (
        Attr(
            "causal",
            "bool",
            False,
            "query i attends only to keys 0..i + S - T: the queries are the last T of the S "
            "positions (PyTorch's causal_lower_right; keys 0..i where T = S)",
        ),
        Attr("scale", "float", None, "multiplies q k^T; 1/sqrt(E) when omitted", positive=True),
        Attr("dropout", "float", 0.0, "attention dropout while training", minimum=0.0, maximum=1.0),
    )

    def positions(self, node, flow):
        return flow.attends(node, node.attrs["causal"])

    def infer(self, ins, a):
        q, k, v = ins[:3]
        for name, t in zip("qkv", (q, k, v), strict=True):
            expect_float(SDPA, t)
            if t.rank != 4 or t.dtype != q.dtype:
                raise SpecError(
                    f"{SDPA}: {name} must be {q.dtype} (N, H, L, E) with heads split, got {t}",
                    hint="reshape to (N, T, H, E) and transpose(1, 2) first",
                )
        _agree("k", k, 0, 2, "q", q, "batch and heads")
        _agree("v", v, 0, 3, "k", k, "batch, heads and keys")
        _agree("k", k, 3, 4, "q", q, "head size")
        if a["scale"] is None and not isinstance(q.shape[3], int):
            raise SpecError(f"{SDPA}: needs a known head size for its scale, got q {q}")
        if len(ins) == 4:
            _check_mask(ins[3], (q.shape[0], q.shape[1], q.shape[2], k.shape[2]))
        return q.with_shape((*q.shape[:3], v.shape[3]))

    def macs(self, node):
        """q k^T, then the weights times v: H*T*S*E + H*T*S*Ev per example."""
        q, k, v = (t.type for t in node.inputs[:3])
        dims = [q.shape[1], dim_add(q.shape[3], v.shape[3]), q.shape[2], k.shape[2]]
        return dim_prod(sorted(dims, key=lambda d: not isinstance(d, int)))  # (96*T)*T

    def torch_call(self, node, args, module):
        a, (q, k, v) = node.attrs, args[:3]
        opts = []
        t, s = f"{q}.size(-2)", f"{k}.size(-2)"  # the queries are the last t of s positions
        if len(args) == 4 and a["causal"]:  # PyTorch refuses attn_mask with is_causal=True
            lower = f"torch.ones({t}, {s}, dtype=torch.bool, device={q}.device)"
            opts.append(f"attn_mask={args[3]} & {lower}.tril({s} - {t})")
        elif len(args) == 4:
            opts.append(f"attn_mask={args[3]}")
        elif a["causal"]:
            opts.append(f"attn_mask=causal_lower_right({t}, {s})")
        if a["dropout"]:
            opts.append(f"dropout_p=({a['dropout']!r} if self.training else 0.0)")
        if a["scale"] is not None:
            opts.append(f"scale={a['scale']!r}")
        return f"F.scaled_dot_product_attention({', '.join([q, k, v, *opts])})"

    def onnx(self, node, b, ins, outs):
        if b.fused:
            self.onnx_fused(node, b, ins, outs)
        else:
            self.onnx_decomposed(node, b, ins, outs)

    def onnx_fused(self, node, b, ins, outs):
        a, ins = node.attrs, list(ins)
        if len(ins) == 4:
            ins[3] = _expand_mask(node, b, ins)
        causal = a["causal"]
        if causal and _aligned(node, b):  # the Attention op aligns is_causal to the first key
            lower = lower_right(node, b, ins[0], ins[1])
            if len(ins) == 4:
                lower = b.add(node, "And", [ins[3], lower], [b.temp(node, "visible")])
            ins, causal = [*ins[:3], lower], False
        scale = {} if a["scale"] is None else {"scale": a["scale"]}
        b.add(node, "Attention", ins, outs, is_causal=int(causal), **scale)

    def onnx_decomposed(self, node, b, ins, outs):
        a, q = node.attrs, node.inputs[0].type
        scale = a["scale"] if a["scale"] is not None else 1 / math.sqrt(q.shape[3])
        mask = ins[3] if len(ins) == 4 else None
        attend(node, b, ins[:3], mask, a["causal"], scale, outs[0], _aligned(node, b))


def attend(
    node: Node,
    b: OnnxBuilder,
    qkv: list[str],
    mask: str | None,
    causal: bool,
    scale: float,
    out: str,
    aligned: bool = False,
) -> None:
    """ONNX softmax(q k^T * scale) v from basic ops (MatMul, Where, Softmax), for runtimes
    without Attention: q (N, H, T, E), k (N, H, S, E), v (N, H, S, Ev). Keys above the diagonal
    (`causal`; `aligned`: ending at the last key) and where the bool `mask` is false get -inf;
    a query that sees no key at all gets zeros, as in PyTorch (the softmax alone would give
    NaN)."""
    (q, k, v), dtype = qkv, node.inputs[0].type.dtype
    kt = b.add(node, "Transpose", [k], [b.temp(node, "k_t")], perm=[0, 1, 3, 2])
    s = b.add(node, "MatMul", [q, kt], [b.temp(node, "qk")])
    s = b.add(node, "Mul", [s, b.const(node, "scale", scale, dtype)], [b.temp(node, "scores")])
    hidden = upper_mask(node, b, s, aligned) if causal else None
    if mask is not None:
        masked = b.add(node, "Not", [mask], [b.temp(node, "masked")])
        hidden = b.add(node, "Or", [hidden, masked], [b.temp(node, "hidden")]) if hidden else masked
    if hidden:
        s = b.add(node, "Where", [hidden, neg_inf(node, b, dtype), s], [b.temp(node, "visible")])
    w = b.add(node, "Softmax", [s], [b.temp(node, "weights")], axis=-1)
    if mask is not None and hidden:
        zero = b.const(node, "zero", 0.0, dtype)
        w = b.add(node, "Where", [hidden, zero, w], [b.temp(node, "seen")])
    b.add(node, "MatMul", [w, v], [out])


def _aligned(node: Node, b: OnnxBuilder) -> bool:
    """Whether the queries may be fewer than the keys, the last T of S positions: in a decoder
    with a cache, or where the spec's q and k lengths differ."""
    return b.kv is not None or node.inputs[0].type.shape[2] != node.inputs[1].type.shape[2]


def _agree(name: str, t: TensorType, lo: int, hi: int, other: str, u: TensorType, what: str):
    """Dims lo..hi-1 of t and u must be equal (the same symbol, or the same number)."""
    if t.shape[lo:hi] != u.shape[lo:hi]:
        raise SpecError(f"{SDPA}: {name} {t} and {other} {u} must agree in {what}")


def _check_mask(m: TensorType, target: tuple) -> None:
    """A bool mask that broadcasts to (N, H, T, S)."""
    shape = "(N, H, T, S) = (" + ", ".join(map(str, target)) + ")"
    if m.dtype != "bool" or not 2 <= m.rank <= 4:
        raise SpecError(
            f"{SDPA}: mask must be bool of rank 2 to 4 and broadcast to {shape}, got {m}",
            hint="a mask over keys only is (N, 1, 1, S); PyTorch refuses a rank-1 mask",
        )
    for d, want in zip(reversed(m.shape), reversed(target), strict=False):
        if d not in (1, want):
            raise SpecError(f"{SDPA}: mask {m} does not broadcast to {shape}")


def _expand_mask(node: Node, b: OnnxBuilder, ins: list[str]) -> str:
    """onnxruntime 1.31's Attention wants the mask's last two dims to be (T, S), unbroadcast."""
    mask, q, k = node.inputs[3].type, node.inputs[0].type, node.inputs[1].type
    if mask.rank >= 2 and mask.shape[-2:] == (q.shape[2], k.shape[2]):
        return ins[3]
    t = b.add(node, "Shape", [ins[0]], [b.temp(node, "t")], start=2, end=3)
    s = b.add(node, "Shape", [ins[1]], [b.temp(node, "s")], start=2, end=3)
    ts = b.add(node, "Concat", [t, s], [b.temp(node, "ts")], axis=0)
    return b.add(node, "Expand", [ins[3], ts], [b.temp(node, "mask")])
