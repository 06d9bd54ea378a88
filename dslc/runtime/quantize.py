"""`dslc compile --target onnx --quantize`: the float model quantized by onnxruntime's own tools
(onnxruntime.quantization for int8, onnxruntime.transformers.float16 for fp16), never by dslc.

int8 is dynamic (MatMulInteger, weights int8, activations quantized per call) for linear and
attention models, and static QDQ (weights per output channel, activations from calibration
data) for convolutional ones, chosen from the spec's ops (`choose`) unless forced. The ONNX
Attention op stays float: the quantizer's QAttention is onnxruntime's contrib op, whose
attributes differ (it rejects is_causal), and the projections around it are MatMuls that are
quantized anyway. Whatever weight the tools left in float is named in the report."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from dslc.backends.onnx.model import ir_version
from dslc.errors import DslcError

# Gather: embedding tables, dequantized after the lookup; LSTM: onnxruntime's
# DynamicQuantizeLSTM (GRU and RNN have no int8 kernel there, and stay float).
DYNAMIC_OPS = ["MatMul", "Gather", "LSTM"]
UNQUANTIZED = {"Attention"}  # never handed to the int8 tools (see the module's doc)


@dataclass
class Report:
    """What the tools did: how, which op types now compute on int8 or fp16 weights, and the
    nodes whose weights stayed float32 (name -> op type)."""

    how: str
    quantized: Counter = field(default_factory=Counter)
    kept: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        done = ", ".join(f"{n} {op}" for op, n in sorted(self.quantized.items())) or "nothing"
        out = [f"quantized ({self.how}): {done}"]
        if self.kept:
            kept = Counter(self.kept.values())
            out.append(
                f"kept in float32 ({len(self.kept)} nodes: "
                + ", ".join(f"{n} {op}" for op, n in sorted(kept.items()))
                + "): "
                + ", ".join(self.kept)
            )
        return out


def choose(mode: str, families: set[str]) -> str:
    """'dynamic', 'static' or 'fp16' for --quantize MODE and the op families of the spec:
    static for convolutional models without attention, dynamic otherwise."""
    if mode != "int8":
        return mode.removeprefix("int8-")
    return "static" if "conv" in families and "attention" not in families else "dynamic"


def quantize(src: Path, dst: Path, how: str, calibration: list[dict] | None = None) -> Report:
    """Quantize the model in `src` into `dst`; `calibration`: input feeds for static int8."""
    if how == "static" and not calibration:
        raise DslcError(
            "static int8 quantization needs calibration data",
            hint="give --calibrate DATA (inputs as for dslc train), or --quantize int8-dynamic",
        )
    with _quiet():
        if how == "fp16":
            report = _fp16(src, dst)
        elif how == "dynamic":
            report = _dynamic(src, dst)
        else:
            report = _static(src, dst, calibration or [])
    _fix_ir_version(dst)
    return _describe(report, onnx.load(str(dst)))


@contextlib.contextmanager
def _quiet():
    """The tools log advice on the root logger ("consider pre-processing"); dslc's report says
    what was done instead."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _op_types(src: Path, allowed: list[str] | None = None) -> list[str]:
    ops = {n.op_type for n in onnx.load(str(src), load_external_data=False).graph.node}
    ops -= UNQUANTIZED
    return sorted(ops if allowed is None else ops & set(allowed))


def _dynamic(src: Path, dst: Path) -> Report:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        src,
        dst,
        op_types_to_quantize=_op_types(src, DYNAMIC_OPS),
        weight_type=QuantType.QInt8,
        per_channel=False,
        extra_options={"MatMulConstBOnly": True},
    )
    return Report("int8 dynamic")


def _static(src: Path, dst: Path, calibration: list[dict]) -> Report:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(calibration)

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(
        src,
        dst,
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=_op_types(src),
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return Report("int8 static QDQ, per channel")


def _fp16(src: Path, dst: Path) -> Report:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return Report("fp16, float32 inputs and outputs")


def _fix_ir_version(path: Path) -> None:
    model = onnx.load(str(path))
    model.ir_version = ir_version(model.opset_import)
    onnx.save(model, str(path))


def _describe(report: Report, model: onnx.ModelProto) -> Report:
    """Count the nodes that compute on quantized weights; name those still reading a float32
    weight (an initializer of rank 2 or more) directly, and the ops kept from the int8 tools."""
    inits = {t.name: t for t in model.graph.initializer}
    low = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT16}
    made = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        weights = [inits[i] for i in node.input if i in inits and len(inits[i].dims) >= 2]
        if node.op_type in ("DequantizeLinear", "Cast"):
            continue
        unhandled = node.op_type in UNQUANTIZED and report.how.startswith("int8")
        if unhandled or any(w.data_type == onnx.TensorProto.FLOAT for w in weights):
            report.kept[node.name] = node.op_type
        elif any(w.data_type in low for w in weights) or _dequantized(node, made, inits):
            report.quantized[node.op_type] += 1
    return report


def _dequantized(node, made: dict, inits: dict) -> bool:
    """A node whose weight comes through DequantizeLinear of an int8 initializer (QDQ)."""
    for i in node.input:
        source = made.get(i)
        if source is not None and source.op_type == "DequantizeLinear":
            if source.input[0] in inits and len(inits[source.input[0]].dims) >= 2:
                return True
    return False


def calibration_feeds(arrays: dict[str, np.ndarray], names: list[str], batch: int = 16):
    """Input feeds of `batch` examples each from the arrays of a data file."""
    n = len(arrays[names[0]])
    return [{k: arrays[k][i : i + batch] for k in names} for i in range(0, n, batch)]
