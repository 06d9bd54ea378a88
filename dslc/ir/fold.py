"""Inference-only rewrites of the IR before ONNX emission. Batch norm in eval mode is a fixed
per-channel affine map, so when it directly follows a convolution or linear layer whose output
nothing else reads, it folds into that layer's weight and bias (w' = w * scale along the output
channel axis, b' = b * scale + shift) and disappears from the graph.

Folding rounds differently from applying the two ops in turn: outputs match the unfolded graph
to about 1e-6 relative, which is why parity after folding is checked at atol 1e-4."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dslc.ir.graph import Graph, Node, ParamSpec, Value
from dslc.ops.init import Init


def fold_batch_norm(
    graph: Graph, weights: dict[str, np.ndarray], in_place: bool = False
) -> tuple[Graph, dict[str, np.ndarray], int]:
    """The graph and weights with every foldable batch norm folded, and how many were.
    `in_place`: the arrays are the caller's to change (freshly drawn ones), which saves a copy
    of every folded weight; a user's state_dict is never changed."""
    producer = {id(v): n for n in graph.nodes for v in n.outputs}
    uses: dict[int, int] = {}
    for n in graph.nodes:
        for v in n.inputs:
            uses[id(v)] = uses.get(id(v), 0) + 1
    outputs = {id(v) for v in graph.outputs.values()}
    weights = dict(weights)
    folded: dict[int, Node] = {}  # id(producer) -> its folded replacement
    for bn in graph.nodes:
        src = producer.get(id(bn.inputs[0])) if _is_affine(bn) else None
        if src is None or not _foldable(src, bn.inputs[0], uses, outputs):
            continue
        folded[id(src)] = _fold(src, bn, weights, in_place)
        folded[id(bn)] = folded[id(src)]
    if not folded:
        return graph, weights, 0
    nodes = []
    for n in graph.nodes:
        if id(n) not in folded:
            nodes.append(n)
        elif not _is_affine(n):
            nodes.append(folded[id(n)])
    return replace(graph, nodes=nodes), weights, len(folded) // 2


def _foldable(src: Node, value: Value, uses: dict[int, int], outputs: set[int]) -> bool:
    if src.op.affine_axis is None or uses[id(value)] != 1 or id(value) in outputs:
        return False
    if src.tied():
        return False  # its weight is shared: scaling it would change the other layer too
    if src.op.affine_axis != 0 and src.attrs.get("groups", 1) != 1:
        return False  # grouped transposed conv: output channels are not one weight axis
    # The affine map scales dim 1 (batch norm's channels): the layer's channels must be there.
    return src.op.channel_dim % value.type.rank == 1


def _is_affine(n: Node) -> bool:
    """An op that is a fixed per-channel affine map in inference (batch norm)."""
    return n.op.affine_in_inference and len(n.inputs) == 1


def _fold(src: Node, bn: Node, weights: dict[str, np.ndarray], in_place: bool) -> Node:
    scale, shift = bn.op.inference_affine(bn, weights)
    w = weights[f"{src.name}.weight"]
    axis = src.op.affine_axis
    shape = [1] * w.ndim
    shape[axis] = -1  # type: ignore[index]
    # One float32 multiply per weight (scale itself is computed in float64).
    factor = scale.reshape(shape).astype(np.float32)
    if in_place and w.dtype == np.float32 and w.flags.writeable:
        w *= factor
    else:
        weights[f"{src.name}.weight"] = w * factor
    bias = weights.get(f"{src.name}.bias", np.zeros(len(scale))).astype(np.float64)
    weights[f"{src.name}.bias"] = (bias * scale + shift).astype(np.float32)
    for key in bn.params:  # the affine map's parameters and statistics, folded away
        weights.pop(bn.key(key), None)
    params = dict(src.params)
    params["bias"] = ParamSpec((len(scale),), Init("zeros"))
    return replace(src, attrs={**src.attrs, "bias": True}, outputs=bn.outputs, params=params)
