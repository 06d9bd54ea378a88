"""`dslc train --export-onnx --bake-normalize`: the spec's `normalize(mean, std)` moved into
the ONNX graph, so that a deployment feeds raw pixels: float32 in 0..255, (N, C, H, W), after
the resize and crop of preprocess. Two nodes before the model, on the image input x:
x * 1 / (255 std) + (-mean / std), per channel, which is (x / 255 - mean) / std."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dslc.errors import DslcError

SUFFIX = "_normalized"


def bake(model: onnx.ModelProto, name: str, mean: tuple, std: tuple) -> None:
    """Rewrite `model` in place: input `name` takes raw pixels."""
    graph = model.graph
    (x,) = [i for i in graph.input if i.name == name]
    if x.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise DslcError(f"--bake-normalize: input '{name}' is not float32")
    inner = name + SUFFIX
    for node in graph.node:
        node.input[:] = [inner if i == name else i for i in node.input]
    shape = (1, len(mean), 1, 1)
    m, s = np.array(mean, np.float64), np.array(std, np.float64)
    scale = (1.0 / (255.0 * s)).astype(np.float32).reshape(shape)
    shift = (-m / s).astype(np.float32).reshape(shape)
    graph.initializer.extend(
        [
            numpy_helper.from_array(scale, f"{name}_pixel_scale"),
            numpy_helper.from_array(shift, f"{name}_pixel_shift"),
        ]
    )
    nodes = [
        helper.make_node("Mul", [name, f"{name}_pixel_scale"], [f"{name}_scaled"], "pixels_scale"),
        helper.make_node("Add", [f"{name}_scaled", f"{name}_pixel_shift"], [inner], "pixels_shift"),
    ]
    for node in reversed(nodes):
        graph.node.insert(0, node)


def raw_pixels(normalized: np.ndarray, mean: tuple, std: tuple) -> np.ndarray:
    """The 0..255 pixels that normalize to `normalized` (for the parity check)."""
    shape = (1, len(mean), 1, 1)
    m, s = np.array(mean).reshape(shape), np.array(std).reshape(shape)
    return ((normalized.astype(np.float64) * s + m) * 255.0).astype(np.float32)
