"""GPT-2 small to ONNX: dslc against torch.onnx.export of the module dslc generates, side by side
in one run:

(a) compile time as whole processes, interleaved: `python -m dslc compile specs/gpt2_small.dl
    --target onnx` against `python bench/export_generated.py` (import the generated model.py,
    build the model, torch.onnx.export: TorchScript exporter at its highest opset, 20, eval
    mode, constant folding, dynamic batch and sequence);
(b) file sizes, and how often the tied 50,257 x 768 matrix is stored in each file;
(c) onnxruntime latency at batch 1, T = 128: dslc's graph with the fused ops (Attention,
    LayerNormalization, Gelu at opset 23), dslc's decomposed graph (--decompose, opset 21) and
    the exported one, sessions interleaved call by call.

    python bench/onnx_gpt.py [--repeats 3] [--length 128] [--threads N]

Writes bench/results/onnx_gpt.json and prints a Markdown table (bench/report.py puts it in
docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import common
import numpy as np
import onnx
from report import onnx_gpt as render

SPEC = "specs/gpt2_small.dl"
VOCAB, WIDTH = 50257, 768


def compile_times(out: Path, repeats: int) -> dict[str, Any]:
    """(a): the two whole processes, alternating."""
    dslc_cmd = [sys.executable, "-m", "dslc", "compile", SPEC, "--target", "onnx"]
    dslc_cmd += ["-o", str(out / "dslc.onnx")]
    export_cmd = [sys.executable, "bench/export_generated.py", str(out / "model.py")]
    export_cmd += [str(out / "export.onnx")]
    pairs = [
        (common.timed_process(dslc_cmd), common.timed_process(export_cmd)) for _ in range(repeats)
    ]
    ours, theirs = [p[0] for p in pairs], [p[1] for p in pairs]
    return {
        "dslc_s": ours,
        "export_s": theirs,
        "dslc_median_s": statistics.median(ours),
        "export_median_s": statistics.median(theirs),
        "speedup": statistics.median(theirs) / statistics.median(ours),
    }


def describe(path: Path) -> dict[str, Any]:
    """(b): size, nodes, opset, and copies of the token matrix (either orientation)."""
    model = onnx.load(str(path), load_external_data=False)
    tied = sum(sorted(t.dims) == sorted([VOCAB, WIDTH]) for t in model.graph.initializer)
    return {
        "bytes": path.stat().st_size,
        "nodes": len(model.graph.node),
        "opset": model.opset_import[0].version,
        "token_matrix_copies": tied,
        "op_types": sorted({n.op_type for n in model.graph.node}),
    }


def latencies(paths: list[Path], length: int, threads: int, budget_s: float):
    """(c): median latency of each model on the same tokens, batch 1, interleaved."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    tokens = np.random.default_rng(0).integers(0, VOCAB, (1, length))
    calls = []
    for p in paths:
        session = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        calls.append(lambda s=session: s.run(None, {s.get_inputs()[0].name: tokens}))
    return common.interleaved(calls, warmup=3, budget_s=budget_s, min_runs=10, max_runs=500)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--budget", type=float, default=60.0, help="seconds for the latency rounds")
    args = p.parse_args()
    data: dict[str, Any] = {"machine": common.machine(), "repeats": args.repeats}
    data |= {"length": args.length, "threads": args.threads, "spec": SPEC}
    with tempfile.TemporaryDirectory(prefix="dslc-bench-gpt-") as tmp:
        out = Path(tmp)
        common.timed_process(
            [sys.executable, "-m", "dslc", "compile", SPEC, "-o", str(out / "model.py")]
        )
        data["compile"] = compile_times(out, args.repeats)
        common.timed_process(
            [sys.executable, "-m", "dslc", "compile", SPEC, "--target", "onnx", "--decompose"]
            + ["-o", str(out / "decomposed.onnx")]
        )
        names = ["dslc", "decomposed", "export"]
        paths = [out / f"{n}.onnx" for n in names]
        data["files"] = {n: describe(path) for n, path in zip(names, paths, strict=True)}
        medians, rounds = latencies(paths, args.length, args.threads, args.budget)
        data["latency"] = dict(zip(names, medians, strict=True)) | {"rounds": rounds}
    print("wrote", common.write_json("onnx_gpt", data))
    print(render(data))


if __name__ == "__main__":
    main()
