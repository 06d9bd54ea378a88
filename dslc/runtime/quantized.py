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

FLAGS = ("quantize", "calibrate", "validate", "max_drop", "force")


def check_flags(args: Any) -> None:
    """The quantization flags belong to --target onnx, and their data to --quantize."""
    given = [f for f in FLAGS if getattr(args, f, None) not in (None, False)]
    if given and args.target != "onnx":
        raise DslcError(
            f"--{given[0].replace('_', '-')} quantizes an ONNX model, not --target {args.target}",
            hint="add --target onnx",
        )
    if not args.quantize and given:
        raise DslcError(
            f"--{given[0].replace('_', '-')} is for a quantized model, and --quantize is not given",
            hint="add --quantize int8 (or fp16)",
        )


def export_quantized(
    spec: Spec, export: Any, args: Any, write: Callable[[Callable], None], shown: str
) -> int:
    """Quantize `export` (an api.OnnxExport) as the flags say; `write(fn)` writes the result
    by calling fn(path), and `shown` names where. Exit status 0; a DslcError when the gate
    refuses."""
    how = choose(args.quantize, {n.op.family for n in spec.graph.nodes})
    if how == "static" and not args.calibrate:
        raise DslcError(
            f"--quantize {args.quantize}: model {spec.name} is convolutional, quantized static "
            "int8 (QDQ, per channel), which needs calibration data",
            hint="give --calibrate DATA (inputs as for dslc train), or --quantize int8-dynamic",
        )
    validation = gate.read_validation(spec, args.validate) if args.validate else None
    feeds = None
    if how == "static" and args.calibrate:
        arrays = gate.read_inputs(spec, args.calibrate, "--calibrate")
        feeds = calibration_feeds(arrays, [v.name for v in spec.graph.inputs])
    with tempfile.TemporaryDirectory(prefix="dslc-quantize-") as tmp:
        float_path, quant_path = Path(tmp) / "float.onnx", Path(tmp) / "quantized.onnx"
        export.write(float_path)
        report = quantize(float_path, quant_path, how, feeds)
        lines = report.lines()
        if how != "static" and args.calibrate:
            lines.append(f"--calibrate is not used: {report.how} needs no calibration")
        verdict = None
        if validation is not None:
            verdict = gate.validate(*validation, float_path, quant_path, args.max_drop)
            lines += verdict.lines(args.quantize)
        for line in lines:
            print(line, file=sys.stderr)
        if verdict is not None and not verdict.ok and not args.force:
            raise DslcError(
                f"the {args.quantize} model's {verdict.metric} drops by {verdict.drop:.2f} "
                f"{'points' if verdict.metric == 'accuracy' else '%'}, more than the "
                f"{verdict.limit:g} allowed: nothing written",
                hint="--force writes it anyway; --max-drop sets the limit"
                + ("; more --calibrate data may help" if how == "static" else ""),
            )
        write(lambda path: shutil.copyfile(quant_path, path))
        size, before = quant_path.stat().st_size, float_path.stat().st_size
    print(
        f"wrote {shown}: {report.how}, {size:,} bytes ({size / before:.2f}x float)", file=sys.stderr
    )
    return 0
