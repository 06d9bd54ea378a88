"""`dslc compile --target onnx --kv-cache`: a decoder that takes the keys and values of the
positions it has already seen and returns them with the new positions' appended, so that after
a prefill (T tokens, an empty past) each decode step runs one token.

What is kept comes from the graph (ir/causal.py): each causal `attention` layer's keys and
values (N, heads, P, head size), and the keys and values of attention written by hand, as the
spec shapes them (kh (N, heads, P, head) for `kt = kh -> transpose(-2, -1)`). Each is a graph
input `past.<i>.key` (or `.value`), P long along the sequence, and an output
`present.<i>.key`, P + T long, i counting the keys (and the values) in graph order. P is
dynamic: P = 0 is the prefill. Positional embeddings add the rows P .. P + T - 1 of their
table, and causal masks end at the last key."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import TensorProto, helper

from dslc.ir.causal import Entry, Plan
from dslc.ir.graph import Node

PAST, PRESENT = "P", "P + T"  # the dims the cache's inputs and outputs name


@dataclass
class KvCache:
    """The cache inputs and outputs of one ONNX build; ops ask it for their names."""

    plan: Plan
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    length: str | None = None  # the name of P, (1,) int64, once a node has asked for it
    extended: dict[int, Entry] = field(default_factory=dict)  # the plan's, by id of value

    def __post_init__(self) -> None:
        self.extended = self.plan.extended()
        for e in sorted(self.plan.entries, key=lambda e: (e.index, e.kind)):
            shape = _shape(e)
            for dim, infos, name in (
                (PAST, self.inputs, past(e)),
                (PRESENT, self.outputs, present(e)),
            ):
                dims = [*shape[: e.axis], dim, *shape[e.axis + 1 :]]
                infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))

    def names(self, node: Node) -> tuple[list[str], list[str]]:
        """The past key and value (graph inputs) and the present ones (graph outputs) of an
        attention layer that keeps its own."""
        kept = sorted(self.plan.of_layer(node), key=lambda e: e.kind)  # key, then value
        return [past(e) for e in kept], [present(e) for e in kept]

    def extend(self, b, node: Node) -> None:
        """After `node`: each of its outputs the decoder keeps gets the past before it; the
        graph reads the joined tensor from then on."""
        for v in node.outputs:
            e = self.extended.get(id(v))
            if e is not None:
                b.add(node, "Concat", [past(e), v.name], [present(e)], axis=e.axis)
                b.alias(v.name, present(e))

    def counts(self, node: Node) -> bool:
        """Whether a positional embedding numbers the decoder's positions (from P)."""
        return any(n is node for n in self.plan.positional)

    def past_length(self, b, node: Node) -> str:
        """P, the number of positions the cache holds: the first kept tensor's sequence dim."""
        if self.length is None:
            e = self.plan.entries[0]
            self.length = b.add(
                node, "Shape", [past(e)], ["past_length"], start=e.axis, end=e.axis + 1
            )
        return self.length


def past(e: Entry) -> str:
    return f"past.{e.index}.{e.kind}"


def present(e: Entry) -> str:
    return f"present.{e.index}.{e.kind}"


def _shape(e: Entry) -> list:
    """The kept tensor's dims (symbols as names): a layer's (N, heads, S, head size)."""
    if e.value is not None:
        dims = list(e.value.type.shape)
    else:
        x, heads = e.node.inputs[0].type, e.node.attrs["heads"]
        dims = [x.shape[0], heads, x.shape[1], x.shape[2] // heads]
    return [d if isinstance(d, int) else str(d) for d in dims]
