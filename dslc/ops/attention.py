"""Multi-head self-attention as one op: the GPT block's attention, with a causal mask and an
optional padding mask. PyTorch gets a small SelfAttention module (nanoGPT's shape); ONNX the
standard Attention op (opset 23) or, decomposed, MatMul/Softmax with the mask built at run
time from the sequence length. MultiHead holds what cross-attention (cross_attention.py)
shares with it: the checks, the projections and the attention over heads in ONNX."""

from __future__ import annotations

import math

from dslc.diagnostics import SpecError
from dslc.ir.graph import ParamSpec
from dslc.ir.types import INT_DTYPES, TensorType, dim_add, dim_mul
from dslc.ops.attention_parts import attend
from dslc.ops.base import Attr, OpDef, expect_f32, register
from dslc.ops.dense import INIT_ATTRS, project
from dslc.ops.init import Init, from_attr
from dslc.ops.pycode import attr, ctor, dim

SELF_ATTENTION = '''
class SelfAttention(nn.Module):
    """Multi-head self-attention over (batch, time, channels): one projection makes every head's
    queries, keys and values, scaled dot-product attention mixes the positions, a second
    projection mixes the heads. `mask` (batch, time): true (or 1) where a position may be
    attended to."""

    def __init__(self, width, heads, causal=False, dropout=0.0, bias=True):
        super().__init__()
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)

    def forward(self, x, mask=None):
        b, t, c = x.shape  # batch, time, channels
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        causal = self.causal  # (b, heads, t, c / heads) each
        if mask is not None:
            mask = mask.bool()[:, None, None, :]  # (b, 1, 1, t)
            if causal:  # PyTorch takes a mask or is_causal, not both
                mask = mask & torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
                causal = False
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))
'''

# What a model KVCache can run (ir/causal.py) adds to SelfAttention: the keys and values of
# the positions seen so far (backends/torch/kvcache.py's Past).
_CACHE_INIT = """
        self.cache = None  # set by KVCache while it decodes
"""[1:]
_CACHE_BRANCH = """
        if self.cache is not None:  # decoding: the new positions are the last t of s
            if mask is not None:
                raise ValueError("KVCache runs attention without a padding mask")
            k, v = self.cache.extend(k, dim=2), self.cache.extend(v, dim=2)
            s = k.shape[2]
            mask = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(s - t)
            causal = False
        elif mask is not None:
"""[1:]
CACHED_SELF_ATTENTION = SELF_ATTENTION.replace(
    "        self.proj = nn.Linear(width, width, bias=bias)\n",
    "        self.proj = nn.Linear(width, width, bias=bias)\n" + _CACHE_INIT,
).replace("        if mask is not None:\n", _CACHE_BRANCH)


HEADS = Attr("heads", "int", doc="number of heads; must divide the width", positive=True)
DROPOUT = Attr(
    "dropout",
    "float",
    0.0,
    "dropout on the attention weights while training",
    minimum=0.0,
    maximum=1.0,
)
BIAS = Attr("bias", "bool", True, "learn biases in the projections")


class MultiHead(OpDef):
    """What self- and cross-attention share: the query width check, the padding mask check, the
    projections' parameters (each an nn.Linear of the helper class) and its PyTorch layout."""

    family = "attention"
    module = True

    def width(self, x: TensorType, heads: int) -> int:
        """The known width of the queries' input x (N, T, width), which the heads divide."""
        expect_f32(self.name, x)
        if x.rank != 3 or not isinstance(x.shape[2], int):
            raise SpecError(f"{self.name} expects (N, T, width) with the width known, got {x}")
        if x.shape[2] % heads:
            raise SpecError(
                f"{self.name}: the width {x.shape[2]} is not divisible by {heads} heads",
                hint="each head takes width / heads features: choose heads that divide it",
            )
        return x.shape[2]

    def check_mask(self, mask: TensorType, keys: TensorType, what: str = "key") -> None:
        """A padding mask (N, S) over the positions of `keys`, bool or 0/1 integers."""
        if mask.dtype not in ("bool", *INT_DTYPES) or mask.shape != keys.shape[:2]:
            raise SpecError(
                f"{self.name}: the padding mask must be bool or integer of shape "
                f"({keys.shape[0]}, {keys.shape[1]}), got {mask}",
                hint=f"one entry per {what} position: true (or 1) where it may be attended to",
            )

    def projections(self, a: dict, shapes: dict[str, tuple[int, int]]) -> dict[str, ParamSpec]:
        """Per projection a weight (out, in) and, with `bias`, a bias, initialized as nn.Linear."""
        weight = from_attr(a["init"], Init("uniform_fan_in"))
        p = {}
        for key, (n_out, n_in) in shapes.items():
            p[f"{key}.weight"] = ParamSpec((n_out, n_in), weight)
            if a["bias"]:
                bias = from_attr(a["bias_init"], Init("uniform_fan_in", fan_in=n_in), vector=True)
                p[f"{key}.bias"] = ParamSpec((n_out,), bias)
        return p

    def torch_param(self, node, key):
        return "nn.Linear", key.split(".")[-1]  # qkv.weight: the weight of an nn.Linear


@register
class Attention(MultiHead):
    name = "attention"
    prefix = "attn"
    transposed_params = ("qkv.weight", "proj.weight")
    torch_helpers = {"SelfAttention": SELF_ATTENTION}
    doc = (
        "Multi-head self-attention over (N, T, width): queries, keys and values from one "
        "projection (parameters qkv), softmax(q k^T / sqrt(width/heads)) v per head, and an "
        "output projection (proj). `causal`: position t sees positions <= t only. An optional "
        "second input, a padding mask (N, T) of bool or 0/1 integers, hides the keys where it "
        "is false/0; a query that may see no key at all gets zeros, as in PyTorch."
    )
    example = "x -> attention(12, causal=true)"
    inputs = ("x", "mask?")
    attrs = (
        HEADS,
        Attr("causal", "bool", False, "hide later positions (a language model's mask)"),
        DROPOUT,
        BIAS,
        *INIT_ATTRS,
    )

    def positions(self, node, flow):
        """Causal, without a padding mask, the layer keeps its own keys and values."""
        if not flow.along(node.inputs[0]):
            return flow.same(node)
        if not node.attrs["causal"]:
            flow.noncausal(node)
        if len(node.inputs) > 1:
            flow.error(node, "--kv-cache does not support a padding mask on attention")
        return flow.layer(node)

    def infer(self, ins, a):
        self.width(ins[0], a["heads"])
        if len(ins) == 2:
            self.check_mask(ins[1], ins[0])
        return ins[0]

    def params(self, ins, a):
        c = ins[0].shape[2]
        return self.projections(a, {"qkv": (3 * c, c), "proj": (c, c)})

    def model_helpers(self, nodes):
        """Where every layer is causal, without a padding mask, SelfAttention can keep its
        keys and values for KVCache (which the model gets where it can decode)."""
        if all(n.attrs["causal"] and len(n.inputs) == 1 for n in nodes):
            return {"SelfAttention": CACHED_SELF_ATTENTION}
        return self.torch_helpers

    def macs(self, node):
        t, c = node.output.type.shape[1], node.output.type.shape[2]
        projections = dim_mul(t, 4 * c * c)  # qkv (3 c^2) and proj (c^2) per position
        return dim_add(projections, dim_mul(dim_mul(t, t), 2 * c))  # q k^T and weights @ v

    def torch_module(self, node):
        return ctor(
            "SelfAttention",
            dim(node, 0, 2),
            attr(node, "heads"),
            causal=attr(node, "causal", default=False),
            dropout=attr(node, "dropout", default=0.0),
            bias=attr(node, "bias", default=True),
        )

    def onnx(self, node, b, ins, outs):
        qkv = project_split(node, b, ins[0], "qkv", "qkv")
        mask = padding_mask(node, b, ins[1], ins[0]) if len(ins) == 2 else None
        attend_heads(node, b, qkv, mask, node.attrs["causal"], outs[0])


def project_split(node, b, x: str, key: str, names: str) -> list[str]:
    """ONNX: x (N, L, in) through projection `key`, split into one tensor of the node's width
    per letter of `names` (q, k, v)."""
    c = node.inputs[0].type.shape[2]
    both = projection(node, b, x, key, b.temp(node, key))
    split = b.const(node, "split", [c] * len(names), "i64")
    parts = [b.temp(node, n) for n in names]
    b.add(node, "Split", [both, split], parts, axis=2)
    return parts


def attend_heads(node, b, qkv: list[str], mask: str | None, causal: bool, out: str) -> None:
    """ONNX: q (N, T, C), k and v (N, S, C) attended over the node's heads, then the output
    projection into `out`: the standard Attention op, or decomposed, MatMul/Softmax. `mask`:
    bool (N, 1, T, S), from padding_mask. Building a decoder with a cache (b.kv), the keys and
    values of the past positions come first and the present ones are outputs."""
    heads, n = b.temp(node, "heads"), node.attrs["heads"]
    past, present = b.kv.names(node) if b.kv else ([], [])
    if b.fused:  # with a past, onnxruntime aligns the causal mask to the last query
        inputs = [*qkv, mask or "", *past] if past else [*qkv, *([mask] if mask else [])]
        b.add(
            node,
            "Attention",
            inputs,
            [heads, *present],
            q_num_heads=n,
            kv_num_heads=n,
            is_causal=int(causal),
        )
    else:
        _decomposed(node, b, qkv, mask, causal, heads, past, present)
    projection(node, b, heads, "proj", out)


def projection(node, b, x: str, key: str, out: str) -> str:
    """ONNX: x through the node's projection `key` (its weight and, with `bias`, its bias)."""
    weight = b.param(node, f"{key}.weight")  # first: initializers in state_dict order
    bias = b.param(node, f"{key}.bias") if node.attrs["bias"] else None
    return project(node, b, x, weight, bias, out, tag=f"{key}_")


def padding_mask(node, b, keep: str, x: str) -> str:
    """(N, S) keep-mask -> bool (N, 1, T, S), T the length of the queries' input x:
    onnxruntime's Attention wants the query dim spelled out rather than broadcast."""
    keep = b.add(node, "Cast", [keep], [b.temp(node, "keep")], to=9)  # BOOL
    axes = b.const(node, "mask_axes", [1, 2], "i64")
    keep = b.add(node, "Unsqueeze", [keep, axes], [b.temp(node, "keep_4d")])  # (N, 1, 1, S)
    length = b.add(node, "Shape", [x], [b.temp(node, "length")], start=1, end=2)
    ones = b.const(node, "ones_2", [1, 1], "i64")
    one = b.const(node, "one", [1], "i64")
    shape = b.add(node, "Concat", [ones, length, one], [b.temp(node, "mask_shape")], axis=0)
    return b.add(node, "Expand", [keep, shape], [b.temp(node, "mask")])


def _decomposed(node, b, qkv: list[str], mask, causal: bool, out: str, past=(), present=()) -> None:
    """Heads split from (N, L, C) to (N, H, L, C/H), attended from basic ops, merged back.
    `past` keys and values (N, H, P, C/H) go before the new ones, which makes `present`."""
    heads, c = node.attrs["heads"], node.inputs[0].type.shape[2]
    split_heads = b.const(node, "head_shape", [0, 0, heads, c // heads], "i64")
    per_head = []
    for name, x in zip("qkv", qkv, strict=True):
        t = b.add(node, "Reshape", [x, split_heads], [b.temp(node, f"{name}_heads")])
        per_head.append(
            b.add(node, "Transpose", [t], [b.temp(node, f"{name}_per_head")], perm=[0, 2, 1, 3])
        )
    for i, (old, new) in enumerate(zip(past, present, strict=True)):
        per_head[i + 1] = b.add(node, "Concat", [old, per_head[i + 1]], [new], axis=2)
    mixed = b.temp(node, "mixed")
    scale = 1.0 / math.sqrt(c // heads)
    attend(node, b, per_head, mask, causal, scale, mixed, aligned=bool(past))
    mixed = b.add(node, "Transpose", [mixed], [b.temp(node, "mixed_t")], perm=[0, 2, 1, 3])
    merge = b.const(node, "merge_shape", [0, 0, c], "i64")
    b.add(node, "Reshape", [mixed, merge], [out])
