"""Token and position embeddings: what turns integer token ids into the vectors a sequence
model works on."""

from __future__ import annotations

import numpy as np

from dslc.diagnostics import SpecError
from dslc.ir.graph import ParamSpec
from dslc.ir.types import INT_DTYPES, TensorType
from dslc.ops.base import Attr, OpDef, expect_f32, register
from dslc.ops.init import Init, from_attr
from dslc.ops.pycode import attr, ctor, dim, lit


@register
class Embedding(OpDef):
    name = "embedding"
    family = "embedding"
    prefix = "embed"
    module = True
    doc = (
        "Looks up a learned vector for each token id: integer ids (N, ...) -> (N, ..., dim) "
        "(torch.nn.Embedding). Ids must lie in 0 .. num_embeddings - 1."
    )
    example = "tokens -> embedding(256, 64)"
    attrs = (
        Attr("num_embeddings", "int", doc="vocabulary size: how many token ids", positive=True),
        Attr("dim", "int", doc="the size of each vector", positive=True),
        Attr("init", "init", "default", "weight initializer; default N(0, 1), PyTorch's"),
        Attr("trainable", "bool", True, "false: the table is frozen, never updated"),
    )

    def positions(self, node, flow):
        return flow.appends(node)

    def infer(self, ins, a):
        (x,) = ins
        if x.dtype not in INT_DTYPES:
            raise SpecError(
                f"embedding takes integer token ids, got {x}",
                hint="declare the token input as i64, e.g. `input tokens: i64[N, T]`",
            )
        return TensorType("f32", (*x.shape, a["dim"]))

    def params(self, ins, a):
        init = from_attr(a["init"], Init("torch_normal"))
        return {"weight": ParamSpec((a["num_embeddings"], a["dim"]), init)}

    def num_tokens(self, node) -> int:
        """How many token ids the input may hold (the vocabulary size)."""
        return node.attrs["num_embeddings"]

    def torch_module(self, node):
        return ctor("nn.Embedding", attr(node, "num_embeddings"), attr(node, "dim"))

    def onnx(self, node, b, ins, outs):
        table = b.param(node, "weight")
        if not b.stored_transposed(node, "weight"):
            b.add(node, "Gather", [table, ins[0]], outs, axis=0)
            return
        # Tied to an output head, which reads the table as (dim, tokens): gather columns, then
        # move the vectors' dim last (an activation's transpose, not the table's).
        rank = node.inputs[0].type.rank
        cols = b.add(node, "Gather", [table, ins[0]], [b.temp(node, "columns")], axis=1)
        b.add(node, "Transpose", [cols], outs, perm=[*range(1, rank + 1), 0])


POSITIONS = '''
class PositionalEmbedding(nn.Module):
    """Adds a vector to each position t of (N, T, D): learned (GPT-2) or the fixed sinusoids of
    Vaswani et al. (2017), sin(t / 10000^(2i/D)) in even dims and cos in odd ones."""

    def __init__(self, max_len, dim, learned=True):
        super().__init__()
        if learned:
            self.weight = nn.Parameter(torch.randn(max_len, dim))
        else:
            position = torch.arange(max_len, dtype=torch.float64)[:, None]
            rate = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
            table = torch.zeros(max_len, dim, dtype=torch.float64)
            table[:, 0::2] = torch.sin(position * rate)
            table[:, 1::2] = torch.cos(position * rate)[:, : dim // 2]
            self.register_buffer("weight", table.float(), persistent=False)
        self.start = 0  # the first position's number: KVCache sets it after the cached ones

    def forward(self, x):
        end = self.start + x.shape[1]
        if end > len(self.weight):
            raise ValueError(f"{end} positions, but the table has {len(self.weight)}")
        return x + self.weight[self.start : end]
'''


def sinusoids(max_len: int, dim: int) -> np.ndarray:
    """The fixed table, computed as PositionalEmbedding computes it (float64, then float32)."""
    position = np.arange(max_len, dtype=np.float64)[:, None]
    rate = 10000.0 ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    table = np.zeros((max_len, dim))
    table[:, 0::2] = np.sin(position * rate)
    table[:, 1::2] = np.cos(position * rate)[:, : dim // 2]
    return table.astype(np.float32)


@register
class PositionalEmbedding(OpDef):
    name = "positional_embedding"
    family = "embedding"
    prefix = "pos"
    module = True
    torch_helpers = {"PositionalEmbedding": POSITIONS}
    doc = (
        "Adds a position vector to each position of (N, T, D): a learned table (GPT-2) or fixed "
        "sinusoids (the Transformer's). Sequences may be up to max_len long."
    )
    example = "x -> positional_embedding(1024)"
    attrs = (
        Attr("max_len", "int", doc="the longest sequence: rows of the table", positive=True),
        Attr("kind", "str", "learned", "learned or sinusoidal", choices=("learned", "sinusoidal")),
        Attr("init", "init", "default", "the learned table's initializer; default N(0, 1)"),
    )

    def positions(self, node, flow):
        return flow.counted(node)

    def infer(self, ins, a):
        (x,) = ins
        expect_f32(self.name, x)
        if x.rank != 3 or not isinstance(x.shape[2], int):
            raise SpecError(f"positional_embedding expects (N, T, D) with D known, got {x}")
        if isinstance(x.shape[1], int) and x.shape[1] > a["max_len"]:
            raise SpecError(
                f"the sequence is longer than the positional table: {x} has {x.shape[1]} "
                f"positions, the table {a['max_len']}",
                hint="raise max_len, or shorten the input",
            )
        return x

    def params(self, ins, a):
        if a["kind"] != "learned":
            return {}
        init = from_attr(a["init"], Init("torch_normal"))
        return {"weight": ParamSpec((a["max_len"], ins[0].shape[2]), init)}

    def tables(self, ins, a):
        return {"table": (a["max_len"], ins[0].shape[2])} if a["kind"] != "learned" else {}

    def torch_module(self, node):
        learned = node.attrs["kind"] == "learned"
        return ctor(
            "PositionalEmbedding",
            attr(node, "max_len"),
            dim(node, 0, 2),
            learned=lit(learned, default=True),
        )

    def onnx(self, node, b, ins, outs):
        a, dim = node.attrs, node.inputs[0].type.shape[2]
        if a["kind"] == "learned":
            table = b.param(node, "weight")
        else:
            table = b.const(node, "table", sinusoids(a["max_len"], dim), "f32")
        length = b.add(node, "Shape", ins, [b.temp(node, "length")], start=1, end=2)
        zero = b.const(node, "zero", [0], "i64")
        start = zero
        if b.kv and b.kv.counts(node):  # a decoder's positions: the new follow the P cached
            start = b.kv.past_length(b, node)
            length = b.add(node, "Add", [start, length], [b.temp(node, "end")])
        rows = b.add(node, "Slice", [table, start, length, zero], [b.temp(node, "rows")])
        b.add(node, "Add", [ins[0], rows], outs)
