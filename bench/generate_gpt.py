"""Generation with GPT-2 small: tokens/s for 128 new tokens (greedy) after a 128-token prompt, with
seeded random weights (torch.manual_seed(0) on the generated module), side by side in one run:

- dslc ONNX with --kv-cache (fused Attention; and --decompose), run by dslc generate's decoder:
  one prefill of the prompt, then one-token decode steps;
- dslc ONNX without the cache, the whole window every token (what `dslc generate --onnx` did);
- the generated PyTorch module with its KVCache, and recomputing the window;
- what a user does today: torch.onnx.export of the generated module (bench/export_generated.py's
  TorchScript exporter, dynamic batch and sequence) and a hand-written onnxruntime loop, which
  has no cache and so runs the whole window every token.

Each path generates once (a recomputing one takes about half a minute here), in the order
above; every path must give the same tokens. Also the prefill and the median decode step of
the cached paths.

    python bench/generate_gpt.py [--threads 2] [--torch-threads N] [--prompt 128] [--new 128]

On a machine busier than its cores, torch's thread pool waits for descheduled threads in every
parallel op (measured here at load 11 on 2 cores: a GPT-2 decode step 0.6 s on 2 threads,
0.06 s on 1); --torch-threads sets torch's threads apart from onnxruntime's.

Writes bench/results/generate_gpt.json and prints a Markdown table (bench/report.py puts it
in docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import os
import statistics
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
    """dslc's three graphs of the same weights, and torch.onnx.export's."""
    from dslc.api import load

    spec, paths = load(SPEC), {}
    for name, fused, kv in (("cache", True, True), ("cache_decomposed", False, True)) + (
        ("recompute", True, False),
    ):
        paths[name] = out / f"{name}.onnx"
        spec.onnx_export(state, fused=fused, kv_cache=kv).write(paths[name])
    return paths


def main() -> None:
    import torch

    from dslc.api import load
    from dslc.runtime.generate import _onnx_cache, onnx_model, torch_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--torch-threads", type=int, help="default: --threads")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    args = p.parse_args()
    torch_threads = args.torch_threads or args.threads
    torch.set_num_threads(torch_threads)
    data: dict[str, Any] = {"machine": common.machine(), "spec": SPEC, "threads": args.threads}
    data["torch_threads"] = torch_threads
    data |= {"prompt": args.prompt, "new": args.new}
    prompt = np.random.default_rng(0).integers(0, VOCAB, args.prompt).tolist()
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dslc-bench-gen-") as tmp:
        out = Path(tmp)
        ns = load(SPEC).torch_namespace()
        torch.manual_seed(0)
        module = ns["create_model"]().eval()
        state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
        paths = onnx_files(out, state)
        from dslc.runtime.train.checkpoint import save_weights

        save_weights(out / "w.safetensors", module.state_dict(), {})
        del state
        for name in ("cache", "cache_decomposed", "recompute"):
            m = onnx_model(str(paths[name]), 1024)
            if name != "recompute":  # the same options as the other sessions
                s = session(paths[name], args.threads)
                m.cached = _onnx_cache(s, "tokens", "logits")
            runs[f"onnx_{name}"] = timed_generation(m, prompt, args.new, name != "recompute")
            print(name, f"{runs[f'onnx_{name}']['tokens_per_s']:.2f} tokens/s", file=sys.stderr)
        tm = torch_model(SPEC, str(out / "w.safetensors"), {})
        for cache in (True, False):
            key = "torch_cache" if cache else "torch_recompute"
            runs[key] = timed_generation(tm, prompt, args.new, cache)
            print(key, f"{runs[key]['tokens_per_s']:.2f} tokens/s", file=sys.stderr)
        start = time.perf_counter()
        export(module, (1, args.prompt), str(out / "export.onnx"), 20)
        data["export_s"] = time.perf_counter() - start
        runs["export_handwritten"] = handwritten(
            out / "export.onnx", prompt, args.new, args.threads
        )
    first = runs["onnx_cache"]["tokens"]
    data["same_tokens"] = {k: r.pop("tokens") == first for k, r in runs.items()}
    data["runs"] = runs
    print("wrote", common.write_json("generate_gpt", data))
    print(render(data))


if __name__ == "__main__":
    main()
