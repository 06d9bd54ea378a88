"""`dslc compile --target onnx --kv-cache`: a decoder that takes the keys and values of the
positions it has already seen and returns them with the new positions' appended, so that after
a prefill (T tokens, an empty past) each decode step runs one token.

Every causal `attention` node gets two graph inputs, `past.<i>.key` and `past.<i>.value`
(N, heads, P, head size), and two outputs, `present.<i>.key` and `present.<i>.value`
(N, heads, P + T, head size), i counting the attention layers in graph order. P is dynamic:
P = 0 is the prefill. Positional embeddings add the rows P .. P + T - 1 of their table.

Only the one-op form is supported: attention written by hand (scaled_dot_product_attention,
causal_mask) is refused, since its keys and values are not known to be a cache's, and so are
non-causal attention (each position would see later ones) and a padding mask."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import TensorProto, helper

from dslc.diagnostics import SpecError
from dslc.errors import DslcError
from dslc.ir.graph import Graph, Node

HAND_WRITTEN = ("scaled_dot_product_attention", "causal_mask")
PAST, PRESENT = "P", "P + T"  # the dims the cache's inputs and outputs name


def cached_layers(graph: Graph) -> list[Node]:
    """The causal attention nodes of a graph that a cache can serve; SpecError at a node that
    rules the cache out, DslcError for a graph without causal attention."""
    layers = []
    for node in graph.nodes:
        if node.op.name in HAND_WRITTEN:
            raise SpecError(
                f"--kv-cache supports the one-op attention(heads, causal=true); this spec "
                f"writes attention by hand ({node.op.name})",
                hint="write the layer as `attention(heads, causal=true)` to compile a cache",
                span=node.span,
            )
        if node.op.name != "attention":
            continue
        if not node.attrs["causal"]:
            raise SpecError(
                "--kv-cache needs causal attention: this layer lets each position see later ones",
                hint="a cache serves a decoder: `attention(heads, causal=true)`",
                span=node.span,
            )
        if len(node.inputs) > 1:
            raise SpecError(
                "--kv-cache does not support a padding mask on attention",
                hint="compile without --kv-cache, or drop the mask (a decoder needs none)",
                span=node.span,
            )
        layers.append(node)
    if not layers:
        raise DslcError(
            f"--kv-cache: model {graph.name} has no causal attention, so there is no cache of "
            "keys and values to keep",
            hint="--kv-cache is for decoders with attention(heads, causal=true)",
        )
    return layers


@dataclass
class KvCache:
    """The cache inputs and outputs of one ONNX build; ops ask it for their names."""

    layers: list[Node]
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    length: str | None = None  # the name of P, (1,) int64, once a node has asked for it

    def names(self, node: Node) -> tuple[list[str], list[str]]:
        """The past key and value (graph inputs) and the present ones (graph outputs) of an
        attention node, declared on first use."""
        i = self.layers.index(node)
        past = [f"past.{i}.key", f"past.{i}.value"]
        present = [f"present.{i}.key", f"present.{i}.value"]
        if not any(v.name == past[0] for v in self.inputs):
            heads, width = node.attrs["heads"], node.inputs[0].type.shape[2]
            n = node.inputs[0].type.shape[0]
            batch = n if isinstance(n, int) else str(n)
            for names, dim, infos in ((past, PAST, self.inputs), (present, PRESENT, self.outputs)):
                shape = [batch, heads, dim, width // heads]
                infos.extend(
                    helper.make_tensor_value_info(x, TensorProto.FLOAT, shape) for x in names
                )
        return past, present

    def past_length(self, b, node: Node) -> str:
        """P, the number of positions the cache holds: dim 2 of the first layer's past key."""
        if self.length is None:
            past, _ = self.names(self.layers[0])
            self.length = b.add(node, "Shape", [past[0]], ["past_length"], start=2, end=3)
        return self.length
