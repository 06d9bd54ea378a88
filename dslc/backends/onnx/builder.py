"""What an op's `onnx` method builds with: OnnxBuilder appends nodes, initializers and
constants for one IR node at a time, naming them after the node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from dslc.ir.graph import Graph, Node
from dslc.ir.types import DTYPES, TensorType, numpy_dtype
from dslc.names import Namespace

if TYPE_CHECKING:
    from dslc.backends.onnx.kvcache import KvCache

OPSET = 21  # the default; a model that uses a newer op gets the opset that defines it
# ONNX ops newer than OPSET that ops emit, and the opset that defines them. The IR version is
# the lowest that holds the opset (10 for 21, 11 for 23): onnxruntime 1.31 reads up to 13.
NEWER_OPS = {"Attention": 23, "RMSNormalization": 23}


class OnnxBuilder:
    """What an op's `onnx` method builds with. `fused`: emit onnxruntime's fused kernels
    (LayerNormalization, Gelu, Attention, RMSNormalization) where an op can; False decomposes
    them into basic ops (MatMul, Softmax, ReduceMean, ...) for runtimes without them. `kv`:
    building a decoder with a cache of keys and values (kvcache.py), else None."""

    def __init__(
        self,
        graph: Graph,
        weights: dict[str, np.ndarray],
        fused: bool = True,
        kv: KvCache | None = None,
    ) -> None:
        self.graph = graph
        self.weights = weights
        self.fused = fused
        self.kv = kv
        self.read: set[str] = set()  # the values the graph reads: an op may skip the others
        self.opset = OPSET
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.aliases: dict[str, str] = {}
        self.node_names = Namespace()
        # Initializers stored transposed (in, out): every parameter an op lists in its
        # transposed_params, under its owner's key where it is tied (one tensor, one layout).
        self.transposed = {
            n.tied().get(key, n.key(key)) for n in graph.nodes for key in n.op.transposed_params
        }

    def resolve(self, name: str) -> str:
        return self.aliases.get(name, name)

    def add(
        self, node: Node, op_type: str, inputs: list[str], outputs: list[str], **attrs: Any
    ) -> str:
        """Append an ONNX node for IR node `node`; returns its first output's name."""
        name = self.node_names.create(f"{node.name}/{op_type}")
        self.opset = max(self.opset, NEWER_OPS.get(op_type, OPSET))
        proto = helper.make_node(
            op_type, [self.resolve(i) for i in inputs], outputs, name=name, **attrs
        )
        source = f"{node.span.path}:{node.span.line}:{node.span.column}"
        proto.metadata_props.add(key="dslc.source", value=source)
        self.nodes.append(proto)
        return outputs[0]

    def param(self, node: Node, key: str) -> str:
        """The initializer of a node's parameter (for a tied one, its owner's: stored once),
        transposed if it is one of `self.transposed` (see `stored_transposed`)."""
        name = node.tied().get(key, node.key(key))
        if name not in self.initializers:
            dtype = node.params[key].dtype if key in node.params else "f32"
            data = np.asarray(self.weights[name], dtype=numpy_dtype(dtype))
            self.initializers[name] = data.T.copy() if name in self.transposed else data
        return name

    def stored_transposed(self, node: Node, key: str) -> bool:
        """Whether a parameter's initializer holds it transposed: an op that reads a table
        another op consumes transposed (an embedding tied to its output head) reads it so."""
        return node.tied().get(key, node.key(key)) in self.transposed

    def weight(self, node: Node, key: str) -> np.ndarray:
        """A parameter's values, for an op whose initializers are computed from its parameters
        (a recurrent layer's gates, reordered): added with `const`, not under its own key."""
        return np.asarray(self.weights[node.key(key)], dtype=np.float32)

    def const(self, node: Node, suffix: str, value: Any, dtype: str) -> str:
        name = f"{node.name}.{suffix}"
        self.initializers[name] = np.asarray(value, dtype=numpy_dtype(dtype))
        return name

    def temp(self, node: Node, suffix: str) -> str:
        return f"{node.name}/{suffix}"

    def alias(self, out: str, inp: str) -> None:
        self.aliases[out] = self.resolve(inp)


def value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    elem = getattr(TensorProto, DTYPES[t.dtype][2])
    return helper.make_tensor_value_info(
        name, elem, [d if isinstance(d, int) else str(d) for d in t.shape]
    )
