"""What the benchmarks share: the machine they ran on, whole-process timing, interleaved
onnxruntime latency, and their JSON results.

Timings are taken side by side and interleaved (A, B, A, B, ...) rather than one after the
other: on a shared or throttling machine, whichever runs first or last gets a different
machine, and timed sequentially the LeNet-5 graphs once looked 50% apart when they were equal."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))  # run as `python bench/x.py` from a checkout


def machine() -> dict[str, Any]:
    """Where and with what a result was taken, to be printed beside it."""
    import onnx
    import onnxruntime
    import torch

    return {
        "date": datetime.date.today().isoformat(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load": round(os.getloadavg()[0], 2),  # at the start: other work on the machine
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def timed_process(cmd: list[str]) -> float:
    """Wall time of a whole process, interpreter start and imports included."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed:\n{done.stderr[-3000:]}")
    return elapsed


def interleaved(calls: list, warmup: int, budget_s: float, min_runs: int, max_runs: int):
    """Median seconds per call of each function, calling them in turn (one call each per
    round). The number of rounds fits `budget_s`, estimated from the warm-up rounds."""
    for _ in range(warmup):
        for call in calls:
            call()
    times: list[list[float]] = [[] for _ in calls]
    rounds = max_runs
    for i in range(max_runs):
        for call, record in zip(calls, times, strict=True):
            start = time.perf_counter()
            call()
            record.append(time.perf_counter() - start)
        if i == min_runs - 1:  # now we know what a round costs
            per_round = sum(statistics.median(t) for t in times)
            rounds = max(min_runs, min(max_runs, int(budget_s / per_round)))
        if i + 1 >= rounds:
            break
    return [statistics.median(t) for t in times], rounds


def ort_latencies(paths: list[Path], batch: int, threads: int, budget_s: float):
    """Median onnxruntime latency of each model on the same random input, interleaved."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sessions = [
        ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in paths
    ]
    calls = [_ort_call(s, batch) for s in sessions]
    return interleaved(calls, warmup=3, budget_s=budget_s, min_runs=10, max_runs=2000)


def _ort_call(session, batch: int):
    (inp,) = session.get_inputs()
    shape = [batch if not isinstance(d, int) else d for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    return lambda: session.run(None, feed)


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def read_json(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())
