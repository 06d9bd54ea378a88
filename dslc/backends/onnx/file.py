"""Checking and writing a large ONNX model without copying its weights through protobuf.

A ResNet-50 carries 100 MB of weights and VGG-16 553 MB. Serializing a ModelProto copies every
byte several times (into the proto, into the serialized string, through the checker's parse),
which made those copies most of `dslc compile`'s time. Here the model comes as a skeleton
(backends.onnx.build_lazy: large initializers without their data) plus the arrays:
- `check` runs onnx's checker and shape inference on the skeleton, with the large initializers
  declared as graph inputs of the same type (their values never matter to shape inference);
- `write` streams protobuf's wire format: the skeleton's own serialization, with each large
  initializer's raw_data field (number 9) appended from the array's buffer. Protobuf readers
  accept fields in any order and concatenate repeated fields, so this is the same model that
  SerializeToString would give, in one self-contained file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from dslc.backends.onnx.model import raw

GRAPH, INITIALIZER, RAW_DATA = 7, 5, 9  # field numbers: ModelProto.graph, GraphProto.initializer,
# TensorProto.raw_data


def check(skeleton: onnx.ModelProto, large: dict[str, np.ndarray]) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(skeleton)
    kept = [t for t in model.graph.initializer if t.name not in large]
    inputs = [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in model.graph.initializer
        if t.name in large
    ]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    model.graph.input.extend(inputs)
    onnx.checker.check_model(model.SerializeToString(), full_check=True)


def write(path: Path, skeleton: onnx.ModelProto, large: dict[str, np.ndarray]) -> int:
    """Write the whole model to `path`; returns its size in bytes."""
    graph = onnx.GraphProto()
    graph.CopyFrom(skeleton.graph)
    tensors = list(graph.initializer)
    del graph.initializer[:]
    pieces: list[bytes | memoryview] = [graph.SerializeToString()]
    for t in tensors:
        head = t.SerializeToString()
        if t.name not in large:
            pieces += [_key(INITIALIZER, len(head)), head]
            continue
        array = large[t.name]
        little = np.ascontiguousarray(array, array.dtype.newbyteorder("<"))
        data = little.reshape(-1).view(np.uint8).data  # the array's own bytes, not a copy
        field = _key(RAW_DATA, data.nbytes)
        pieces += [_key(INITIALIZER, len(head) + len(field) + data.nbytes), head, field, data]
    rest = onnx.ModelProto()
    rest.CopyFrom(skeleton)
    rest.ClearField("graph")
    graph_size = sum(len(p) for p in pieces)
    pieces = [rest.SerializeToString(), _key(GRAPH, graph_size), *pieces]
    with open(path, "wb") as f:
        for piece in pieces:
            f.write(piece)
    return sum(len(p) for p in pieces)


def whole(skeleton: onnx.ModelProto, large: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of the skeleton with every initializer's data in it (the API's ModelProto)."""
    model = onnx.ModelProto()
    model.CopyFrom(skeleton)
    for t in model.graph.initializer:
        if t.name in large:
            t.raw_data = raw(large[t.name])
    return model


def _key(field: int, size: int) -> bytes:
    """A length-delimited field's tag and length."""
    return _varint(field << 3 | 2) + _varint(size)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
