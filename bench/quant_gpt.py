"""GPT-2 small (specs/gpt2_small.dl, seeded random weights): the weight layout and dynamic int8,
side by side in one run:

(a) layout: dslc's graph (linear and attention weights stored transposed, MatMul on the
    initializer) against the layout dslc wrote before (each weight through a Transpose node at
    run time, rebuilt here from the same model by `transposed_at_run_time`): file size, nodes,
    Transposes of a weight, onnxruntime session creation (median, interleaved), and how many
    MatMuls onnxruntime's quantize_dynamic turns into MatMulInteger in each;
(b) `dslc compile --quantize int8` (dynamic) against float: file size and latency at batch 1,
    T = 1 and T = 128 (sessions interleaved call by call).

    python bench/quant_gpt.py [--threads N] [--budget S]

Writes bench/results/quant_gpt.json and prints a Markdown table (bench/report.py)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
import onnx
from onnx import helper, numpy_helper
from report import quant_gpt as render

SPEC, VOCAB = "specs/gpt2_small.dl", 50257


def transposed_at_run_time(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model in the layout of dslc before weights were stored transposed: each
    MatMul's weight stored (out, in) and transposed by a node at run time; the tied token
    table (V, C), gathered on axis 0."""
    inits = {t.name: t for t in model.graph.initializer}
    users = {t: [n for n in model.graph.node if t in n.input] for t in inits}
    nodes = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            weight = node.input[1]
            t = helper.make_node("Transpose", [weight], [f"{weight}/t"], perm=[1, 0])
            nodes.append(t)
            node.input[1] = f"{weight}/t"
        nodes.append(node)
    for name, tensor in inits.items():
        if any(n.op_type == "MatMul" for n in users[name]):
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).T.copy(), name))
    out = []
    for node in nodes:  # Gather(axis=1) + Transpose of a tied table -> Gather(axis=0)
        if node.op_type == "Gather" and node.attribute[0].i == 1:
            node.attribute[0].i = 0
            follow = next(n for n in nodes if node.output[0] in n.input)
            node.output[0] = follow.output[0]
            follow.op_type = "Drop"
        if node.op_type != "Drop":
            out.append(node)
    del model.graph.node[:]
    model.graph.node.extend(out)
    return model


def describe(path: Path) -> dict[str, Any]:
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    ops = [n.op_type for n in model.graph.node]
    return {
        "bytes": path.stat().st_size,
        "nodes": len(ops),
        "weight_transposes": sum(
            n.op_type == "Transpose" and n.input[0] in inits for n in model.graph.node
        ),
        "matmul_integer": ops.count("MatMulInteger"),
    }


def session_times(paths: list[Path], threads: int, repeats: int) -> list[float]:
    import onnxruntime as ort

    times: list[list[float]] = [[] for _ in paths]
    for _ in range(repeats):
        for p, record in zip(paths, times, strict=True):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            start = time.perf_counter()
            ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
            record.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def latencies(paths: list[Path], length: int, threads: int, budget: float):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    tokens = np.random.default_rng(0).integers(0, VOCAB, (1, length))
    calls = []
    for p in paths:
        s = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        calls.append(lambda s=s: s.run(None, {s.get_inputs()[0].name: tokens}))
    return common.interleaved(calls, warmup=2, budget_s=budget, min_runs=5, max_runs=200)


def dynamic_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--budget", type=float, default=20.0, help="seconds per latency comparison")
    p.add_argument("--repeats", type=int, default=5, help="session creations per model")
    args = p.parse_args()
    data: dict[str, Any] = {"machine": common.machine(), "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="dslc-bench-qgpt-") as tmp:
        out = Path(tmp)
        after, before, int8 = out / "dslc.onnx", out / "before.onnx", out / "int8.onnx"
        for path, extra in [(after, []), (int8, ["--quantize", "int8"])]:
            cmd = [sys.executable, "-m", "dslc", "compile", SPEC, "--target", "onnx"]
            subprocess.run([*cmd, "-o", str(path), *extra], cwd=common.ROOT, check=True)
        onnx.save(transposed_at_run_time(onnx.load(str(after))), str(before))
        layout = {"dslc": describe(after), "before": describe(before)}
        for name, src in [("dslc", after), ("before", before)]:
            dynamic_int8(src, out / f"{name}.q.onnx")
            layout[name]["quantized_matmuls"] = describe(out / f"{name}.q.onnx")["matmul_integer"]
            (out / f"{name}.q.onnx").unlink()
        sessions = session_times([before, after], args.threads, args.repeats)
        layout["before"]["session_s"], layout["dslc"]["session_s"] = sessions
        data["layout"] = layout
        data["int8"] = {"bytes": int8.stat().st_size, "float_bytes": after.stat().st_size}
        for length in (1, 128):
            medians, rounds = latencies([after, int8], length, args.threads, args.budget)
            data["int8"][f"T{length}"] = {"float": medians[0], "int8": medians[1], "rounds": rounds}
    print("wrote", common.write_json("quant_gpt", data))
    print(render(data))


if __name__ == "__main__":
    main()
