"""ONNX backend: IR -> ModelProto, built directly with onnx.helper (no tracing, no torch).

Inference semantics: dropout disappears, batch norm uses its running statistics. Each op's
nodes come from its registry entry (OpDef.onnx) through the small OnnxBuilder below; this
module only adds the graph's signature, the initializers and the model wrapper."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from dslc import __version__, init
from dslc.errors import DslcError
from dslc.ir import Graph, Node
from dslc.ops.base import ParamSpec
from dslc.types import DTYPES, TensorType, numpy_dtype

OPSET = 21  # the default; a model that uses a newer op gets the opset that defines it
# ONNX ops newer than OPSET that ops emit, and the opset that defines them. The IR version is
# the lowest that holds the opset (10 for 21, 11 for 23): onnxruntime 1.31 reads up to 13.
NEWER_OPS = {"Attention": 23, "RMSNormalization": 23}


class OnnxBuilder:
    """What an op's `onnx` method builds with. `fused`: emit onnxruntime's fused kernels
    (LayerNormalization, Gelu, Attention, RMSNormalization) where an op can; False decomposes
    them into basic ops (MatMul, Softmax, ReduceMean, ...) for runtimes without them."""

    def __init__(self, graph: Graph, weights: dict[str, np.ndarray], fused: bool = True) -> None:
        self.graph = graph
        self.weights = weights
        self.fused = fused
        self.opset = OPSET
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.aliases: dict[str, str] = {}
        self.node_names: set[str] = set()

    def resolve(self, name: str) -> str:
        return self.aliases.get(name, name)

    def add(
        self, node: Node, op_type: str, inputs: list[str], outputs: list[str], **attrs: Any
    ) -> str:
        """Append an ONNX node for IR node `node`; returns its first output's name."""
        name, k = f"{node.name}/{op_type}", 1
        while name in self.node_names:
            k += 1
            name = f"{node.name}/{op_type}_{k}"
        self.node_names.add(name)
        self.opset = max(self.opset, NEWER_OPS.get(op_type, OPSET))
        proto = helper.make_node(
            op_type, [self.resolve(i) for i in inputs], outputs, name=name, **attrs
        )
        source = f"{node.span.path}:{node.span.line}:{node.span.column}"
        proto.metadata_props.add(key="dslc.source", value=source)
        self.nodes.append(proto)
        return outputs[0]

    def param(self, node: Node, key: str) -> str:
        """The initializer of a node's parameter (for a tied one, its owner's: stored once)."""
        name = node.tied().get(key, f"{node.name}.{key}")
        if name not in self.initializers:
            dtype = node.params[key].dtype if key in node.params else "f32"
            self.initializers[name] = np.asarray(self.weights[name], dtype=numpy_dtype(dtype))
        return name

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


def build_lazy(
    graph: Graph, weights: dict[str, np.ndarray], fused: bool = True
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The model with the data of its large initializers left out (their name, type and dims
    are there), and those arrays by name: a 100 MB model is then checked and written without
    copying its weights through protobuf (dslc/backends/onnx_file.py)."""
    for v in [*graph.inputs, *(out for n in graph.nodes for out in n.outputs)]:
        if v.type.dtype == "bf16":
            raise DslcError(
                f"'{v.name}' is bf16, which dslc does not export to ONNX yet "
                "(onnxruntime's CPU kernels lack most bf16 ops)",
                hint="declare the input as f32 (or f16) for the ONNX model",
            )
    b = OnnxBuilder(graph, weights, fused)
    for node in graph.nodes:
        node.op.onnx(
            node, b, [b.resolve(v.name) for v in node.inputs], [v.name for v in node.outputs]
        )
    outputs = []
    for name, value in graph.outputs.items():
        if b.resolve(value.name) != name:  # an output that is another value under a new name
            b.nodes.append(
                helper.make_node(
                    "Identity", [b.resolve(value.name)], [name], name=f"{name}/Identity"
                )
            )
        outputs.append(value_info(name, value.type))
    g = helper.make_graph(
        b.nodes,
        graph.name,
        [value_info(v.name, v.type) for v in graph.inputs],
        outputs,
    )
    model = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", b.opset)],
        ir_version=helper.find_min_ir_version_for([helper.make_opsetid("", b.opset)]),
        producer_name="dslc",
        producer_version=__version__,
        doc_string=f"{graph.name}, compiled by dslc from {graph.path}",
    )
    large = {}
    for name, data in b.initializers.items():
        t = model.graph.initializer.add()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(data.dtype)
        t.dims.extend(data.shape)
        if data.size <= SMALL:  # shapes, scales, biases: kept, so the checker sees their values
            t.raw_data = raw(data)
        else:
            large[name] = data
    return model, large


SMALL = 4096  # initializers up to this many elements carry their data in the skeleton


def raw(data: np.ndarray) -> bytes:
    """An array's bytes as ONNX's raw_data holds them (little-endian, C order)."""
    return np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()


def resolve_weights(graph: Graph, weights: Any, seed: int) -> dict[str, np.ndarray]:
    """Every parameter and buffer as a numpy array, keyed by state_dict name."""
    expected = dict(graph.parameters(buffers=True))
    if weights is None:
        return _sample_all(expected, seed)
    if isinstance(weights, str | os.PathLike):
        from dslc.weights import load_weights

        weights = load_weights(weights)
    arrays = {
        k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        for k, v in weights.items()
    }
    prefix = graph.weight_prefix
    if prefix and not expected.keys() & arrays.keys():  # the full model's weights: take the part
        arrays = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    problems = [f"missing '{k}' {list(p.shape)}" for k, p in expected.items() if k not in arrays]
    problems += [
        f"'{k}' has shape {list(arrays[k].shape)}, the spec needs {list(p.shape)}"
        for k, p in expected.items()
        if k in arrays and tuple(arrays[k].shape) != p.shape
    ]
    tied = graph.ties()  # a state_dict holds a tied tensor under both keys: the owner's is used
    problems += [
        f"unexpected '{k}'"
        for k in arrays
        if k not in expected and k not in tied and not k.endswith("num_batches_tracked")
    ]
    if problems:
        raise DslcError(
            f"the weights do not fit model {graph.name}:\n  " + "\n  ".join(problems),
            hint="save them with torch.save(model.state_dict(), path) from the generated module",
        )
    return arrays


PIECE = 1 << 22  # elements drawn by one generator: GPT-2's 38.6M-value embedding is 10 pieces


def _sample_all(expected: dict[str, ParamSpec], seed: int) -> dict[str, np.ndarray]:
    """Fresh initializers, each piece of PIECE values drawn by its own generator (seeded by the
    seed, the parameter's index and the piece's), so threads draw them in any order with the
    same result: NumPy releases the GIL while it fills an array, and GPT-2 has 124M values."""
    arrays = {k: np.empty(p.shape, np.float32) for k, p in expected.items()}
    pieces = [
        (i, j, k, p)
        for i, (k, p) in enumerate(expected.items())
        for j in range(
            max(1, -(-math.prod(p.shape) // PIECE)) if p.init.kind in init.ELEMENTWISE else 1
        )
    ]

    def draw(task: tuple[int, int, str, ParamSpec]) -> None:
        i, j, key, p = task
        if p.init.kind not in init.ELEMENTWISE:
            arrays[key] = init.sample(p.init, p.shape, np.random.default_rng([seed, i]))
            return
        piece = arrays[key].reshape(-1)[j * PIECE : (j + 1) * PIECE]
        init.fill(p.init, piece, np.random.default_rng([seed, i, j]), p.shape)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(draw, pieces))
    return arrays


def to_text(model: onnx.ModelProto) -> str:
    """The model as onnx.printer text, with each initializer's data replaced by its type, so
    the text stays short and independent of the weights (golden files use it)."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    del stripped.graph.initializer[:]
    header = [
        f"# initializer {t.name}: {helper.tensor_dtype_to_np_dtype(t.data_type)}{list(t.dims)}"
        for t in model.graph.initializer
    ]
    return "\n".join(header) + "\n" + onnx.printer.to_text(stripped) + "\n"
