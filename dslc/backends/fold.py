"""Inference-only rewrites of the IR before ONNX emission. Batch norm in eval mode is a fixed
per-channel affine map, so when it directly follows a convolution or linear layer whose output
nothing else reads, it folds into that layer's weight and bias (w' = w * scale along the output
channel axis, b' = b * scale + shift) and disappears from the graph.

Folding rounds differently from applying the two ops in turn: outputs match the unfolded graph
to about 1e-6 relative, which is why parity after folding is checked at atol 1e-4."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dslc.init import Init
from dslc.ir import Graph, Node, Value
from dslc.ops.base import ParamSpec


def fold_batch_norm(
    graph: Graph, weights: dict[str, np.ndarray]
) -> tuple[Graph, dict[str, np.ndarray], int]:
    """The graph and weights with every foldable batch norm folded, and how many were."""
    producer = {id(v): n for n in graph.nodes for v in n.outputs}
    uses: dict[int, int] = {}
    for n in graph.nodes:
        for v in n.inputs:
            uses[id(v)] = uses.get(id(v), 0) + 1
    outputs = {id(v) for v in graph.outputs.values()}
    weights = dict(weights)
    folded: dict[int, Node] = {}  # id(producer) -> its folded replacement
    for bn in graph.nodes:
        src = producer.get(id(bn.inputs[0])) if bn.op.name == "batch_norm" else None
        if src is None or not _foldable(src, bn.inputs[0], uses, outputs):
            continue
        folded[id(src)] = _fold(src, bn, weights)
        folded[id(bn)] = folded[id(src)]
    if not folded:
        return graph, weights, 0
    nodes = []
    for n in graph.nodes:
        if id(n) not in folded:
            nodes.append(n)
        elif n.op.name != "batch_norm":
            nodes.append(folded[id(n)])
    return replace(graph, nodes=nodes), weights, len(folded) // 2


def _foldable(src: Node, value: Value, uses: dict[int, int], outputs: set[int]) -> bool:
    if src.op.affine_axis is None or uses[id(value)] != 1 or id(value) in outputs:
        return False
    if src.op.affine_axis != 0 and src.attrs.get("groups", 1) != 1:
        return False  # grouped transposed conv: output channels are not one weight axis
    # Batch norm normalizes dim 1; a linear layer's channels are its last dim.
    return src.op.name != "linear" or value.type.rank == 2


def _fold(src: Node, bn: Node, weights: dict[str, np.ndarray]) -> Node:
    scale, shift = bn.op.inference_affine(bn, weights)  # type: ignore[attr-defined]
    w = weights[f"{src.name}.weight"]
    axis = src.op.affine_axis
    shape = [1] * w.ndim
    shape[axis] = -1  # type: ignore[index]
    # One float32 multiply per weight (scale itself is computed in float64).
    weights[f"{src.name}.weight"] = w * scale.reshape(shape).astype(np.float32)
    bias = weights.get(f"{src.name}.bias", np.zeros(len(scale))).astype(np.float64)
    weights[f"{src.name}.bias"] = (bias * scale + shift).astype(np.float32)
    for key in ("weight", "bias", "running_mean", "running_var"):
        weights.pop(f"{bn.name}.{key}", None)
    params = dict(src.params)
    params["bias"] = ParamSpec((len(scale),), Init("zeros"))
    return replace(src, attrs={**src.attrs, "bias": True}, outputs=bn.outputs, params=params)
