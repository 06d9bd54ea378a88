"""int8 against float in onnxruntime, side by side in one run:

(a) ResNet-50 (specs/resnet50.dl, seeded random weights, batch norm folded): static int8 (QDQ,
    per channel, calibrated on `--calibration` random images) against the float model:
    latency at batch 1 and 8 (sessions interleaved call by call) and file size;
(b) the digits CNN (specs/digits_cnn.dl trained by the bundled example's data for the spec's
    epochs): validation accuracy float against int8 through the accuracy gate, and a case the
    gate must refuse: calibrated on blank images, so every activation range is wrong.

    python bench/quant_vision.py [--threads N] [--budget S]

Writes bench/results/quant_vision.json and prints a Markdown table (bench/report.py)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import common
import numpy as np
from report import quant_vision as render

PY = [sys.executable, "-m", "dslc"]


def dslc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PY, *args], cwd=common.ROOT, capture_output=True, text=True)


def resnet(out: Path, threads: int, budget: float, images: int) -> dict[str, Any]:
    calib = out / "calib.npz"
    rng = np.random.default_rng(0)
    np.savez(calib, image=rng.standard_normal((images, 3, 224, 224)).astype(np.float32))
    f32, i8 = out / "resnet50.onnx", out / "resnet50.int8.onnx"
    for path, extra in [(f32, []), (i8, ["--quantize", "int8", "--calibrate", str(calib)])]:
        done = dslc("compile", "specs/resnet50.dl", "--target", "onnx", "-o", str(path), *extra)
        if done.returncode:
            raise SystemExit(done.stderr)
    result: dict[str, Any] = {"bytes": {"float": f32.stat().st_size, "int8": i8.stat().st_size}}
    result["report"] = done.stderr.strip().splitlines()
    for batch in (1, 8):
        medians, rounds = common.ort_latencies([f32, i8], batch, threads, budget)
        result[f"batch{batch}"] = {"float": medians[0], "int8": medians[1], "rounds": rounds}
    return result


def digits(out: Path) -> dict[str, Any]:
    sys.path.insert(0, str(common.ROOT / "examples" / "digits"))
    from make_data import make

    make(out / "digits")
    train, val = out / "digits" / "train.npz", out / "digits" / "val.npz"
    run = out / "run"
    done = dslc(
        "train", "specs/digits_cnn.dl", "--data", str(train), "--val", str(val), "--out", str(run)
    )
    if done.returncode:
        raise SystemExit(done.stderr)
    blank = out / "blank.npz"
    np.savez(blank, x=np.zeros((64, 1, 8, 8), np.float32))
    cases = {}
    for name, calib in [("calibrated", train), ("blank calibration", blank)]:
        done = dslc(
            "compile", "specs/digits_cnn.dl", "--target", "onnx", "--weights",
            str(run / "best.safetensors"), "-o", str(out / f"{name}.onnx"), "--quantize", "int8",
            "--calibrate", str(calib), "--validate", str(val), "--max-drop", "0.5",
        )  # fmt: skip
        cases[name] = {
            "exit": done.returncode,
            "written": (out / f"{name}.onnx").exists(),
            "report": done.stderr.strip().splitlines(),
        }
    return cases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--budget", type=float, default=30.0, help="seconds per latency round set")
    p.add_argument("--calibration", type=int, default=32, help="ResNet-50 calibration images")
    args = p.parse_args()
    data: dict[str, Any] = {"machine": common.machine(), "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="dslc-bench-quant-") as tmp:
        out = Path(tmp)
        data["resnet50"] = resnet(out, args.threads, args.budget, args.calibration)
        data["digits"] = digits(out)
    print("wrote", common.write_json("quant_vision", data))
    print(render(data))


if __name__ == "__main__":
    main()
