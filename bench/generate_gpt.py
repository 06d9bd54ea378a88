"""Generation with GPT-2 small: tokens/s for 128 new tokens (greedy) after a 128-token prompt, with
seeded random weights (torch.manual_seed(0) on the generated module), side by side in one run:

- dslc ONNX with --kv-cache (fused Attention; and --decompose), run by dslc generate's decoder:
  one prefill of the prompt, then one-token decode steps;
- the same decoder quantized to dynamic int8 (`--kv-cache --quantize int8`: onnxruntime's
  quantize_dynamic through dslc.runtime.quantize), by the same loop;
- dslc ONNX without the cache, the whole window every token (what `dslc generate --onnx` did);
- the generated PyTorch module with its KVCache, and recomputing the window;
- what a user does today: torch.onnx.export of the generated module (bench/export_generated.py's
  TorchScript exporter, dynamic batch and sequence) and a hand-written onnxruntime loop, which
  has no cache and so runs the whole window every token; and the same with the dynamo exporter
  (torch.onnx.export(dynamo=True)), exported by a separate process in an environment that has
  onnxscript (--dynamo-python; dslc does not depend on it).

Each path generates once (a recomputing one takes about half a minute here), in the order
above; every float path must give the same tokens, and for int8 the count of the tokens that
agree with the float decoder's is recorded (greedy decoding diverges once one argmax flips).
Also the prefill and the median decode step of the cached paths, and float against int8 decode
steps interleaved call by call on the same tokens (the ratio to quote on a shared machine).

    python bench/generate_gpt.py [--threads 2] [--torch-threads N] [--prompt 128] [--new 128]
        [--dynamo-python /tmp/benchenv/bin/python]

On a machine busier than its cores, torch's thread pool waits for descheduled threads in every
parallel op (measured here at load 11 on 2 cores: a GPT-2 decode step 0.6 s on 2 threads,
0.06 s on 1); --torch-threads sets torch's threads apart from onnxruntime's.

Writes bench/results/generate_gpt.json and prints a Markdown table (bench/report.py puts it
in docs/benchmarks.md)."""

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
from export_generated import export
from report import generate_gpt as render

SPEC = "specs/gpt2_small.dl"
VOCAB = 50257


def session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def timed_generation(model, prompt: list[int], new: int, cache: bool) -> dict[str, Any]:
    """Greedy generation through dslc generate's loop, each call to the model timed."""
    from dslc.runtime.generate import Model, Options, generate

    steps: list[float] = []

    def timed(f):
        def call(*args):
            start = time.perf_counter()
            out = f(*args)
            steps.append(time.perf_counter() - start)
            return out

        return call

    cached = timed(model.cached) if model.cached else None
    wrapped = Model(timed(model.step), model.vocab, model.context, cached)
    start = time.perf_counter()
    ids = generate(
        wrapped, prompt, 1024, Options(max_new_tokens=new, temperature=0.0, kv_cache=cache)
    )
    return summary(time.perf_counter() - start, steps, ids[len(prompt) :])


def summary(total: float, steps: list[float], tokens: list[int]) -> dict[str, Any]:
    return {
        "seconds": total,
        "tokens_per_s": len(tokens) / total,
        "first_s": steps[0],  # the prefill (or the first full window)
        "step_median_s": statistics.median(steps[1:]),
        "tokens": tokens,
    }


def handwritten(path: Path, prompt: list[int], new: int, threads: int) -> dict[str, Any]:
    """The loop a user writes around an exported model: the whole window, argmax, append."""
    s = session(path, threads)
    ids, steps = list(prompt), []
    start = time.perf_counter()
    for _ in range(new):
        t = time.perf_counter()
        logits = s.run(["logits"], {"tokens": np.asarray([ids[-1024:]], dtype=np.int64)})[0]
        ids.append(int(np.argmax(logits[0, -1])))
        steps.append(time.perf_counter() - t)
    return summary(time.perf_counter() - start, steps, ids[len(prompt) :])


def onnx_files(out: Path, state: dict) -> dict[str, Path]:
    """dslc's three graphs of the same weights, and the cached one quantized to int8."""
    from dslc.api import load
    from dslc.runtime.quantize import quantize

    spec, paths = load(SPEC), {}
    for name, fused, kv in (("cache", True, True), ("cache_decomposed", False, True)) + (
        ("recompute", True, False),
    ):
        paths[name] = out / f"{name}.onnx"
        spec.onnx_export(state, fused=fused, kv_cache=kv).write(paths[name])
    paths["cache_int8"] = out / "cache_int8.onnx"
    quantize(paths["cache"], paths["cache_int8"], "dynamic")
    return paths


def onnx_runs(paths: dict[str, Path], prompt: list[int], new: int, threads: int) -> dict:
    from dslc.runtime.generate import _onnx_cache, onnx_model

    runs = {}
    for name in ("cache", "cache_int8", "cache_decomposed", "recompute"):
        m = onnx_model(str(paths[name]), 1024)
        if name != "recompute":  # the same options as the other sessions
            m.cached = _onnx_cache(session(paths[name], threads), "tokens", "logits")
        runs[f"onnx_{name}"] = timed_generation(m, prompt, new, name != "recompute")
        print(name, f"{runs[f'onnx_{name}']['tokens_per_s']:.2f} tokens/s", file=sys.stderr)
    return runs


def interleaved_decode(paths: dict[str, Path], prompt: list[int], new: int, threads: int):
    """Float and int8 decoders prefilled with the prompt, then fed the float decoder's greedy
    token, one decode step each in turn (which goes first alternating): the medians, the median
    of the per-step ratios, how often int8's argmax agrees on the same context, and why not:
    the logits' largest difference against the float's margin between its two best."""
    from dslc.runtime.generate import _onnx_cache

    f, q = (
        _onnx_cache(session(paths[k], threads), "tokens", "logits") for k in ("cache", "cache_int8")
    )
    assert f and q
    ids = np.asarray([prompt], dtype=np.int64)
    logits = [f(ids, True), q(ids, True)]
    times: list[list[float]] = [[], []]
    agree, diffs, margins = 0, [], []
    for step in range(new):
        agree += int(np.argmax(logits[1]) == np.argmax(logits[0]))
        diffs.append(float(np.abs(logits[1] - logits[0]).max()))
        top = np.sort(logits[0])[-2:]
        margins.append(float(top[1] - top[0]))
        token = np.asarray([[int(np.argmax(logits[0]))]], dtype=np.int64)
        for i in (0, 1) if step % 2 == 0 else (1, 0):
            start = time.perf_counter()
            logits[i] = (f, q)[i](token, False)
            times[i].append(time.perf_counter() - start)
    return {
        "steps": new,
        "float_step_s": statistics.median(times[0]),
        "int8_step_s": statistics.median(times[1]),
        "speedup": statistics.median(a / b for a, b in zip(*times, strict=True)),
        "argmax_agree": agree,
        "logit_diff_median": statistics.median(diffs),  # the largest |int8 - float| per step
        "top2_margin_median": statistics.median(margins),  # float's best logit over its second
    }


def torch_runs(module, out: Path, prompt: list[int], new: int) -> dict:
    from dslc.runtime.generate import torch_model
    from dslc.runtime.train.checkpoint import save_weights

    save_weights(out / "w.safetensors", module.state_dict(), {})
    tm, runs = torch_model(SPEC, str(out / "w.safetensors"), {}), {}
    for cache in (True, False):
        key = "torch_cache" if cache else "torch_recompute"
        runs[key] = timed_generation(tm, prompt, new, cache)
        print(key, f"{runs[key]['tokens_per_s']:.2f} tokens/s", file=sys.stderr)
    return runs


def dynamo_export(python: str | None, out: Path, length: int) -> dict[str, Any]:
    """bench/export_generated.py --dynamo as a whole process in `python`'s environment; what
    failed, word for word, when it did."""
    if not python:
        return {"error": "not run: no --dynamo-python (an environment with onnxscript)"}
    from dslc.api import load

    (out / "model.py").write_text(load(SPEC).torch_source())
    script = Path(__file__).with_name("export_generated.py")
    cmd = [python, str(script), str(out / "model.py"), str(out / "dynamo.onnx"), "--dynamo"]
    start = time.perf_counter()
    done = subprocess.run([*cmd, "--tokens", f"1,{length}"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["exit status"])[-1]}
    return {"export_s": seconds, "path": str(out / "dynamo.onnx")}


def main() -> None:
    import torch

    from dslc.api import load

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--torch-threads", type=int, help="default: --threads")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--dynamo-python", help="a python with torch and onnxscript")
    args = p.parse_args()
    torch_threads = args.torch_threads or args.threads
    torch.set_num_threads(torch_threads)
    data: dict[str, Any] = {"machine": common.machine(), "spec": SPEC, "threads": args.threads}
    data["torch_threads"] = torch_threads
    data |= {"prompt": args.prompt, "new": args.new}
    prompt = np.random.default_rng(0).integers(0, VOCAB, args.prompt).tolist()
    with tempfile.TemporaryDirectory(prefix="dslc-bench-gen-") as tmp:
        out = Path(tmp)
        torch.manual_seed(0)
        module = load(SPEC).torch_namespace()["create_model"]().eval()
        paths = onnx_files(out, {k: v.detach().numpy() for k, v in module.state_dict().items()})
        data["bytes"] = {k: paths[k].stat().st_size for k in ("cache", "cache_int8")}
        runs = onnx_runs(paths, prompt, args.new, args.threads)
        data["decode_interleaved"] = interleaved_decode(paths, prompt, args.new, args.threads)
        runs |= torch_runs(module, out, prompt, args.new)
        start = time.perf_counter()
        export(module, (1, args.prompt), str(out / "export.onnx"), 20)
        data["export_s"] = time.perf_counter() - start
        runs["export_handwritten"] = handwritten(
            out / "export.onnx", prompt, args.new, args.threads
        )
        data["dynamo"] = dynamo_export(args.dynamo_python, out, args.prompt)
        if "path" in data["dynamo"]:
            dynamo = Path(data["dynamo"].pop("path"))
            runs["dynamo_handwritten"] = handwritten(dynamo, prompt, args.new, args.threads)
    first = runs["onnx_cache"]["tokens"]
    int8 = runs["onnx_cache_int8"]["tokens"]
    data["int8_agree"] = sum(a == b for a, b in zip(first, int8, strict=True))
    data["int8_first_difference"] = next(
        (i for i, (a, b) in enumerate(zip(first, int8, strict=True)) if a != b), None
    )
    data["same_tokens"] = {k: r.pop("tokens") == first for k, r in runs.items()}
    data["runs"] = runs
    print("wrote", common.write_json("generate_gpt", data))
    print(render(data))


if __name__ == "__main__":
    main()
