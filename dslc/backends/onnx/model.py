"""ONNX backend: IR -> ModelProto, built directly with onnx.helper (no tracing, no torch).

Inference semantics: dropout disappears, batch norm uses its running statistics. Each op's
nodes come from its registry entry (OpDef.onnx) through OnnxBuilder (builder.py); this module
only adds the graph's signature, the initializers and the model wrapper."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper

from dslc.backends.onnx.builder import OnnxBuilder, value_info
from dslc.backends.onnx.kvcache import KvCache
from dslc.errors import DslcError
from dslc.ir.causal import plan
from dslc.ir.graph import Graph, Node
from dslc.version import __version__


def build_lazy(
    graph: Graph, weights: dict[str, np.ndarray], fused: bool = True, kv_cache: bool = False
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The model with the data of its large initializers left out (their name, type and dims
    are there), and those arrays by name: a 100 MB model is then checked and written without
    copying its weights through protobuf (dslc/backends/onnx_file.py). `kv_cache`: a decoder
    with past and present keys and values (kvcache.py)."""
    for v in [*graph.inputs, *(out for n in graph.nodes for out in n.outputs)]:
        if v.type.dtype == "bf16":
            raise DslcError(
                f"'{v.name}' is bf16, which dslc does not export to ONNX yet "
                "(onnxruntime's CPU kernels lack most bf16 ops)",
                hint="declare the input as f32 (or f16) for the ONNX model",
            )
    kv = KvCache(plan(graph)) if kv_cache else None
    b = OnnxBuilder(graph, weights, fused, kv)
    nodes = needed(graph)
    b.read = {v.name for n in nodes for v in n.inputs} | {v.name for v in graph.served.values()}
    for node in nodes:
        node.op.onnx(
            node, b, [b.resolve(v.name) for v in node.inputs], [v.name for v in node.outputs]
        )
        if kv:
            kv.extend(b, node)
    outputs = []
    for name, value in graph.served.items():
        if b.resolve(value.name) != name:  # an output that is another value under a new name
            b.nodes.append(
                helper.make_node(
                    "Identity", [b.resolve(value.name)], [name], name=f"{name}/Identity"
                )
            )
        outputs.append(value_info(name, value.type))
    inputs = [value_info(v.name, v.type) for v in graph.inputs]
    if kv:
        inputs, outputs = inputs + kv.inputs, outputs + kv.outputs
    g = helper.make_graph(b.nodes, graph.name, inputs, outputs)
    model = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", b.opset)],
        ir_version=ir_version([helper.make_opsetid("", b.opset)]),
        producer_name="dslc",
        producer_version=__version__,
        doc_string=f"{graph.name}, compiled by dslc from {graph.path}",
    )
    found = detections(graph)
    if found:
        model.metadata_props.add(key=DETECTIONS_KEY, value=json.dumps(found))
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


def ir_version(opsets) -> int:
    """The lowest IR version that holds the standard opsets among `opsets` (onnx itself writes
    its newest, which onnxruntime may not read yet); custom domains (com.microsoft, which the
    quantizers add) do not raise it."""
    standard = [o for o in opsets if o.domain in ("", "ai.onnx", "ai.onnx.ml")]
    return helper.find_min_ir_version_for(standard)


SMALL = 4096  # initializers up to this many elements carry their data in the skeleton


def raw(data: np.ndarray) -> bytes:
    """An array's bytes as ONNX's raw_data holds them (little-endian, C order)."""
    return np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()


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


DETECTIONS_KEY = "dslc.detections"  # which outputs are boxes, scores, labels and images


def detections(graph: Graph) -> dict[str, str]:
    """What each of a detector's outputs is, by output name: {"boxes": "boxes", ...}, from the
    op that declares its outputs detections (OpDef.detection_outputs); empty for other models."""
    served = {id(v): name for name, v in graph.served.items()}
    for node in graph.nodes:
        kinds = node.op.detection_outputs
        names = [served.get(id(v)) for v in node.outputs]
        if kinds and all(names):
            return dict(zip(kinds, names, strict=True))  # type: ignore[arg-type]
    return {}


def needed(graph: Graph) -> list[Node]:
    """The nodes the outputs for inference need: what only a training output reads (the
    loss's tensors, `train output`) is left out of the ONNX graph."""
    if not graph.train_outputs:
        return graph.nodes
    wanted = {id(v) for v in graph.served.values()}
    kept: list[Node] = []
    for node in reversed(graph.nodes):
        if any(id(v) in wanted for v in node.outputs):
            kept.append(node)
            wanted |= {id(v) for v in node.inputs}
    return kept[::-1]
