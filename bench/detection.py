"""Detection serving and export: dslc's ONNX detectors against the PyTorch module dslc
generates and against torch.onnx.export of that module, side by side in one run, for
specs/faster_rcnn.dl (torchvision's fasterrcnn_resnet50_fpn) at 512 and 800 pixels and the small
specs/shapes_detector.dl at 64:

(a) weights that detect: random weights score every box alike (no detections, or all of them),
    so batch norm statistics come from a training-mode pass over random images, with random
    affine maps, and the RPN's and the predictor's last layers are scaled as
    tests/test_faster_rcnn.py does; both backends get these weights;
(b) dslc's compile to ONNX with those weights (`dslc compile --target onnx --weights`), whole
    processes, median of --repeats; the file's size and node count; onnxruntime's session
    creation, median of --repeats;
(c) latency at batch 1 and 2 with 1 and 2 threads: onnxruntime CPU against the generated module
    in eval mode under torch.no_grad (torch.set_num_threads the same), called in turn on the
    same images, median; the detections each returned;
(d) torch.onnx.export of the generated module (bench/export_detection.py, a whole process; the
    TorchScript exporter, and the dynamo one only where onnxscript is installed): whether it
    exports, and if so whether onnxruntime runs the file and gives PyTorch's detections on the
    traced batch and on a second batch with another number of detections.

    python bench/detection.py [--cases shapes_detector,faster_rcnn_512] [--budget S]

Writes bench/results/detection.json and prints Markdown tables (bench/report.py puts them in
docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common
import numpy as np
import onnx
import onnxruntime as ort
import torch
from report import detection as render

import dslc

SERVED = ["boxes", "scores", "labels", "images"]


@dataclass(frozen=True)
class Case:
    spec: str
    size: int
    trainable: dict[str, Any] = field(default_factory=dict)  # the spec with batch norm to fit


CASES = {
    "shapes_detector": Case("specs/shapes_detector.dl", 64),
    "faster_rcnn_512": Case("specs/faster_rcnn.dl", 512, {"frozen_bn": False}),
    "faster_rcnn_800": Case("specs/faster_rcnn.dl", 800, {"frozen_bn": False}),
}
# The last layers scaled as tests/test_faster_rcnn.py does: name suffix -> weight std.
SCALED = {
    "rpn.head.bbox_pred": 0.05,
    "box_predictor.cls_score": 0.5,
    "box_predictor.bbox_pred": 0.05,
}


def images(batch: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def detecting_weights(case: Case, calibration: torch.Tensor) -> dict[str, torch.Tensor]:
    """(a): the served module's state_dict, batch norm fitted to `calibration` through the
    trainable form of the spec (the frozen form's statistics are buffers no pass updates)."""
    torch.manual_seed(0)  # the modules' own initialization
    gen = torch.Generator().manual_seed(1)
    model = dslc.load(case.spec, {"size": case.size, **case.trainable}).torch_module()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 1.0  # the statistics of this one pass
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.2, generator=gen)
        getattr(model, "backbone", model).train()(calibration)
        for name, m in model.named_modules():
            std = next((s for suffix, s in SCALED.items() if name.endswith(suffix)), None)
            if std is not None:
                m.weight.normal_(0.0, std, generator=gen)
    served = dslc.load(case.spec, {"size": case.size}).torch_module().state_dict()
    return {k: v for k, v in model.state_dict().items() if k in served}


def dslc_compile(case: Case, weights: Path, out: Path, target: str) -> list[str]:
    return [
        *[sys.executable, "-m", "dslc", "compile", case.spec, "--param", f"size={case.size}"],
        *["--target", target, "--weights", str(weights), "-o", str(out)],
    ]


def describe(path: Path, repeats: int) -> dict[str, Any]:
    """(b): the file, and onnxruntime's session creation (one thread), median."""
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    detection_ops = ["NonMaxSuppression", "RoiAlign", "TopK", "ScatterND", "Loop", "If"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session(path, 1)
        times.append(time.perf_counter() - start)
    return {
        "bytes": path.stat().st_size,
        "nodes": len(ops),
        "op_counts": {op: ops.count(op) for op in detection_ops if op in ops},
        "session_s": statistics.median(times),
    }


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def latency(path: Path, model, batch: int, threads: int, size: int, budget: float) -> dict:
    """(c): one thread count, one batch: onnxruntime and PyTorch in turn on the same images."""
    torch.set_num_threads(threads)
    sess, x = session(path, threads), images(batch, size, seed=2)
    feed = {"image": x.numpy()}
    with torch.no_grad():
        calls = [lambda: sess.run(SERVED, feed), lambda: model(x)]
        (t_ort, t_torch), rounds = common.interleaved(calls, 1, budget, min_runs=3, max_runs=200)
        found = [len(sess.run(SERVED, feed)[0]), len(model(x)[0])]
    return {"ort": t_ort, "torch": t_torch, "runs": rounds, "detections": found}


def torch_export(module: Path, weights: Path, out: Path, timeout: float, dynamo: bool) -> dict:
    """(d): the export as a whole process; its JSON line, or how it ended."""
    cmd = [sys.executable, "bench/export_detection.py", str(module), str(weights)]
    cmd += [str(out / "trace.npy"), str(out / "export.onnx"), *(["--dynamo"] if dynamo else [])]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"exported": False, "error": f"no result in {timeout:.0f} s", "process_s": timeout}
    elapsed = time.perf_counter() - start
    lines = done.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        return {"exported": False, "error": done.stderr.strip()[-300:], "process_s": elapsed}
    return json.loads(lines[-1]) | {"process_s": elapsed}


def check_export(path: Path, model, batches: dict[str, torch.Tensor]) -> dict[str, Any]:
    """(d): the exported file in onnxruntime against the generated module, per batch."""
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        return {"loads": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:240]}"}
    result: dict[str, Any] = {"loads": True}
    for name, x in batches.items():
        with torch.no_grad():
            want = [t.numpy() for t in model(x)[:4]]
        try:
            got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[:4]
        except Exception as e:
            result[name] = {"runs": False, "error": f"{type(e).__name__}: {str(e)[:240]}"}
            continue
        same = all(
            g.shape == w.shape and np.allclose(g, w, atol=1e-4)
            for g, w in zip(got, want, strict=True)
        )
        result[name] = {"runs": True, "detections": len(got[0]), "torch": len(want[0])}
        result[name]["equal"] = bool(same)
    return result


def run_case(name: str, case: Case, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    out.mkdir()
    weights, dslc_onnx, module = out / "weights.pt", out / "dslc.onnx", out / "model.py"
    torch.save(detecting_weights(case, images(2, case.size, seed=1)), weights)
    common.timed_process(dslc_compile(case, weights, module, "torch"))
    compile_s = [
        common.timed_process(dslc_compile(case, weights, dslc_onnx, "onnx"))
        for _ in range(args.repeats)
    ]
    model = dslc.load(case.spec, {"size": case.size}).torch_module().eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    result: dict[str, Any] = {"spec": case.spec, "size": case.size}
    result["params"] = sum(p.numel() for p in model.parameters())
    result["compile_s"] = statistics.median(compile_s)
    result["file"] = describe(dslc_onnx, args.repeats)
    result["latency"] = {
        f"{threads}/{batch}": latency(dslc_onnx, model, batch, threads, case.size, args.budget)
        for threads in (1, 2)
        for batch in (1, 2)
    }
    result["export"] = export_case(out, module, weights, model, case, args.timeout)
    print(f"{name}: done", file=sys.stderr)
    return result


def export_case(out: Path, module: Path, weights: Path, model, case: Case, timeout: float):
    """(d) for each exporter there is: TorchScript always, dynamo where onnxscript is."""
    traced, other = images(1, case.size, seed=3), images(1, case.size, seed=4)
    np.save(out / "trace.npy", traced.numpy())
    exports: dict[str, Any] = {}
    for exporter, dynamo in [("torchscript", False), ("dynamo", True)]:
        if dynamo and importlib.util.find_spec("onnxscript") is None:
            exports[exporter] = {"exported": False, "error": "not run: onnxscript not installed"}
            continue
        r = torch_export(module, weights, out, timeout, dynamo)
        if r["exported"]:
            r["check"] = check_export(
                out / "export.onnx", model, {"traced": traced, "other": other}
            )
        exports[exporter] = r
    return exports


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--repeats", type=int, default=3, help="compiles and session creations")
    p.add_argument("--budget", type=float, default=6.0, help="seconds per latency pair")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds for one export")
    p.add_argument("--name", default="detection", help="the results file under bench/results/")
    args = p.parse_args()
    data: dict[str, Any] = {"machine": common.machine(), "repeats": args.repeats}
    data["budget_s"] = args.budget
    data["onnxscript"] = importlib.util.find_spec("onnxscript") is not None
    with tempfile.TemporaryDirectory(prefix="dslc-bench-det-") as tmp:
        data["results"] = {
            name: run_case(name, CASES[name], Path(tmp) / name, args)
            for name in args.cases.split(",")
        }
    data["machine"]["load_end"] = round(os.getloadavg()[0], 2)
    print("wrote", common.write_json(args.name, data))
    print(render(data))


if __name__ == "__main__":
    main()
