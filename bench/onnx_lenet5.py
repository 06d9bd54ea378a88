"""LeNet-5 to ONNX, dslc against what a user would otherwise do, side by side in one run:

1. compile time as whole processes: `dslc compile specs/lenet5.dl --target onnx` against a
   process that builds the same network written by hand in PyTorch and calls torch.onnx.export
   (the TorchScript exporter, opset 20: the dynamo exporter needs onnxscript);
2. onnxruntime latency of the two graphs, batch 1 and 8 (median of many runs).

    python bench/onnx_lenet5.py [--repeats 5]

Prints a Markdown table with medians and ratios (docs/benchmarks.md records one run)."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent

HAND_WRITTEN = """
import torch
from torch import nn
import torch.nn.functional as F

class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = F.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

torch.onnx.export(
    LeNet5().eval(), (torch.randn(1, 1, 32, 32),), OUT, dynamo=False, opset_version=20,
    input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
)
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def latencies(paths: list[Path], batch: int, runs: int = 2000) -> list[float]:
    """Median latency of each model. The sessions run interleaved, one call each in turn, so
    that clock and cache drift hit them alike (timing them one after the other showed the
    first one 50% slower)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions = [
        ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in paths
    ]
    x = np.random.default_rng(0).standard_normal((batch, 1, 32, 32)).astype(np.float32)
    times: list[list[float]] = [[] for _ in sessions]
    for i in range(runs + 50):
        for session, record in zip(sessions, times, strict=True):
            start = time.perf_counter()
            session.run(None, {"x": x})
            if i >= 50:  # warm-up
                record.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="dslc-bench-"))
    ours, theirs = out / "dslc.onnx", out / "export.onnx"
    dslc_cmd = [
        sys.executable,
        "-m",
        "dslc",
        "compile",
        "specs/lenet5.dl",
        "--target",
        "onnx",
        "-o",
        str(ours),
    ]
    export_cmd = [sys.executable, "-c", f"OUT = {str(theirs)!r}\n" + HAND_WRITTEN]
    pairs = [(timed(dslc_cmd), timed(export_cmd)) for _ in range(args.repeats)]  # interleaved
    t_dslc = statistics.median(p[0] for p in pairs)
    t_export = statistics.median(p[1] for p in pairs)
    nodes = (len(onnx.load(ours).graph.node), len(onnx.load(theirs).graph.node))
    print("| measure | dslc | hand-written + torch.onnx.export | ratio (export / dslc) |")
    print("|---|---|---|---|")
    print(
        f"| compile, whole process (median of {args.repeats}) | {t_dslc:.2f} s | {t_export:.2f} s "
        f"| {t_export / t_dslc:.1f}x |"
    )
    print(f"| ONNX nodes | {nodes[0]} | {nodes[1]} | |")
    print(f"| file size | {ours.stat().st_size:,} B | {theirs.stat().st_size:,} B | |")
    for batch in (1, 8):
        a, b = latencies([ours, theirs], batch)
        print(
            f"| onnxruntime latency, batch {batch}, 1 thread (median) "
            f"| {a * 1e6:.0f} us | {b * 1e6:.0f} us | {b / a:.2f}x |"
        )


if __name__ == "__main__":
    main()
