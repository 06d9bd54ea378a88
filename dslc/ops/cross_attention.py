"""Multi-head cross-attention as one op: a Transformer decoder's attention to the encoder's
output. Queries come from x (N, T, width), keys and values from memory (N, S, memory width):
T and S may differ, and so may the widths (the key/value projection maps the memory's width to
the queries', as nn.MultiheadAttention's kdim/vdim do). PyTorch gets a small CrossAttention
module; ONNX the standard Attention op with different query and key lengths, or decomposed,
the MatMul/Softmax path self-attention uses (attention.py holds all it shares with it)."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ir.types import INT_DTYPES, dim_add, dim_mul
from dslc.ops.attention import (
    BIAS,
    DROPOUT,
    HEADS,
    MultiHead,
    attend_heads,
    padding_mask,
    project_split,
    projection,
)
from dslc.ops.base import expect_f32, register
from dslc.ops.dense import INIT_ATTRS
from dslc.ops.pycode import attr, ctor, dim

CROSS_ATTENTION = '''
class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from x (batch, time, channels), keys and values from
    memory (batch, source, memory channels), as in a Transformer decoder; a last projection
    mixes the heads. `mask` (batch, source): true (or 1) where a memory position may be attended
    to."""

    def __init__(self, width, memory_width, heads, dropout=0.0, bias=True):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(width, width, bias=bias)
        self.kv = nn.Linear(memory_width, 2 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)

    def forward(self, x, memory, mask=None):
        b, t, c = x.shape  # batch, time, channels
        s, h = memory.shape[1], self.heads  # source positions, heads
        q = self.q(x).view(b, t, h, c // h).transpose(1, 2)  # (b, heads, t, c / heads)
        k, v = (z.view(b, s, h, c // h).transpose(1, 2) for z in self.kv(memory).split(c, dim=2))
        if mask is not None:
            mask = mask.bool()[:, None, None, :]  # (b, 1, 1, s)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))
'''


@register
class CrossAttention(MultiHead):
    name = "cross_attention"
    prefix = "xattn"
    transposed_params = ("q.weight", "kv.weight", "proj.weight")
    torch_helpers = {"CrossAttention": CROSS_ATTENTION}
    doc = (
        "Multi-head cross-attention: queries from x (N, T, width) (parameters q), keys and values "
        "from memory (N, S, memory width) (kv, which maps the memory's width to the queries'), "
        "softmax(q k^T / sqrt(width/heads)) v per head, and an output projection (proj); the "
        "output is (N, T, width). An optional third input, a padding mask (N, S) of bool or 0/1 "
        "integers, hides the memory positions where it is false/0; a query that may see no key "
        "at all gets zeros, as in PyTorch. No causal mask: every query sees all of the memory."
    )
    example = "y = h + cross_attention(h -> layer_norm, memory, source_mask, 8)"
    inputs = ("x", "memory", "mask?")
    attrs = (HEADS, DROPOUT, BIAS, *INIT_ATTRS)

    def positions(self, node, flow):
        return flow.queries(node)

    def infer(self, ins, a):
        x, memory = ins[:2]
        self.width(x, a["heads"])
        if memory.dtype in INT_DTYPES:
            raise SpecError(
                f"{self.name}: memory must be f32 (N, S, width), got {memory}",
                hint="token ids are embedded first: source -> embedding(vocab, width)",
            )
        expect_f32(self.name, memory, "memory")
        if memory.rank != 3 or not isinstance(memory.shape[2], int):
            raise SpecError(
                f"{self.name} expects memory (N, S, width) with the width known, got {memory}",
                hint="keys and values come from positions: one vector is reshape([N, 1, width])",
            )
        if memory.shape[0] != x.shape[0]:
            raise SpecError(
                f"{self.name}: x {x} and memory {memory} must agree in the batch dim",
                hint="each sequence attends to its own memory: the same N for both",
            )
        if len(ins) == 3:
            self.check_mask(ins[2], memory, "memory")
        return x

    def params(self, ins, a):
        c, m = ins[0].shape[2], ins[1].shape[2]
        return self.projections(a, {"q": (c, c), "kv": (2 * c, m), "proj": (c, c)})

    def macs(self, node):
        """Per example: q and proj over T queries, kv over S memory positions, then q k^T and
        the weights times v over T x S pairs."""
        x, memory = (v.type for v in node.inputs[:2])
        (t, c), (s, m) = x.shape[1:], memory.shape[1:]
        projections = dim_add(dim_mul(t, 2 * c * c), dim_mul(s, 2 * c * m))
        return dim_add(projections, dim_mul(dim_mul(t, s), 2 * c))

    def torch_module(self, node):
        return ctor(
            "CrossAttention",
            dim(node, 0, 2),
            dim(node, 1, 2),
            attr(node, "heads"),
            dropout=attr(node, "dropout", default=0.0),
            bias=attr(node, "bias", default=True),
        )

    def onnx(self, node, b, ins, outs):
        q = projection(node, b, ins[0], "q", b.temp(node, "q"))
        k, v = project_split(node, b, ins[1], "kv", "kv")
        mask = padding_mask(node, b, ins[2], ins[0]) if len(ins) == 3 else None
        attend_heads(node, b, [q, k, v], mask, False, outs[0])
