"""`dslc compile --target onnx --quantize MODE [--calibrate DATA] [--validate DATA]`: the float
model written to a private directory, quantized there (runtime/quantize.py), checked against
the float model on the validation data (runtime/gate.py), and only then written where asked:
a model that fails the gate is not written at all, unless --force."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dslc.api import Spec
from dslc.errors import DslcError
from dslc.runtime import gate
from dslc.runtime.quantize import calibration_feeds, choose, quantize


def export_quantized(
    spec: Spec, export: Any, args: Any, write: Callable[[Callable], None], where: str
) -> int:
    """Quantize `export` (an api.OnnxExport) as the flags say; `write(fn)` writes the result
    by calling fn(path), and `where` names it. Exit status 0; a DslcError when the gate
    refuses."""
    how = choose(args.quantize, {n.op.family for n in spec.graph.nodes})
    if how == "static" and not args.calibrate:
        raise DslcError(
            f"--quantize {args.quantize}: model {spec.name} is convolutional, quantized static "
            "int8 (QDQ, per channel), which needs calibration data",
            hint="give --calibrate DATA (inputs as for dslc train), or --quantize int8-dynamic",
        )
    validation = gate.read_validation(spec, args.validate) if args.validate else None
    calibration = gate.read_inputs(spec, args.calibrate, "--calibrate") if args.calibrate else None
    with tempfile.TemporaryDirectory(prefix="dslc-quantize-") as tmp:
        float_path, quant_path = Path(tmp) / "float.onnx", Path(tmp) / "quantized.onnx"
        export.write(float_path)
        summary = gated(spec, float_path, quant_path, args.quantize, calibration, validation,
                        args.max_drop, args.force)  # fmt: skip
        write(lambda path: shutil.copyfile(quant_path, path))
    print(f"wrote {where}: {summary}", file=sys.stderr)
    return 0


def gated(
    spec: Spec,
    float_path: Path,
    quant_path: Path,
    mode: str,
    calibration: dict | None,
    validation: tuple | None,
    max_drop: float | None = None,
    force: bool = False,
) -> str:
    """Quantize `float_path` into `quant_path` and print the report; with `validation` (a
    contract and its arrays), the gate: a DslcError when the metric drops too far, unless
    `force`. Returns a line on what was written."""
    how = choose(mode, {n.op.family for n in spec.graph.nodes})
    names = [v.name for v in spec.graph.inputs]
    feeds = calibration_feeds(calibration, names) if how == "static" and calibration else None
    report = quantize(float_path, quant_path, how, feeds)
    lines = report.lines()
    if how != "static" and calibration is not None:
        lines.append(f"calibration data not used: {report.how} needs none")
    verdict = None
    if validation is not None:
        c, arrays = validation
        verdict = gate.validate(c, arrays, float_path, quant_path, max_drop)
        lines += verdict.lines(mode)
    for line in lines:
        print(line, file=sys.stderr)
    if verdict is not None and not verdict.ok and not force:
        quant_path.unlink()
        raise DslcError(
            f"the {mode} model's {verdict.metric} drops by {verdict.drop:.2f} "
            f"{'points' if verdict.metric == 'accuracy' else '%'}, more than the "
            f"{verdict.limit:g} allowed: nothing written",
            hint="--force writes it anyway; --max-drop sets the limit"
            + ("; calibration data like the validation data may help" if how == "static" else ""),
        )
    size, before = quant_path.stat().st_size, float_path.stat().st_size
    return f"{report.how}, {size:,} bytes ({size / before:.2f}x float)"


def train_export(spec: Spec, c: Any, out: Path, mode: str, train: Any, val: Any) -> int:
    """`dslc train --export-onnx --quantize MODE`: out/model.onnx quantized into
    out/model.MODE.onnx, calibrated on (up to 512 of) the training examples and gated on the
    validation data. The float model stays; a refused model is not written (exit 1)."""
    arrays = {k: t.numpy() for k, t in val.tensors.items()}
    calibration = {k: train.tensors[k][:512].numpy() for k in c.inputs}
    dst = out / f"model.{mode}.onnx"
    try:
        summary = gated(spec, out / "model.onnx", dst, mode, calibration, (c, arrays))
    except DslcError as err:
        print(f"dslc: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {dst}: {summary}", file=sys.stderr)
    return 0
