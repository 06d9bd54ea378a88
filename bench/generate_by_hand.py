"""Generation with attention written by hand, at GPT-2 small's size (12 layers, width 768, 12
heads, 1024 positions; a 256-byte vocabulary): tokens/s for 128 new tokens (greedy) after a
128-token prompt, seeded random weights, side by side in one run:

- specs/tiny_gpt_by_hand.dl (matmul, causal_mask, softmax) and specs/swiglu_decoder.dl
  (scaled_dot_product_attention, RMSNorm, SwiGLU), which `--kv-cache` serves since the cache
  follows the sequence through the graph (dslc/ir/causal.py);
- for each: dslc ONNX with --kv-cache (fused and --decompose) and without it (the whole window
  every token), and the generated PyTorch module with its KVCache and recomputing the window,
  all through dslc generate's loop; every path must give the same tokens.

    python bench/generate_by_hand.py [--threads 2] [--torch-threads N] [--prompt 128] [--new 128]

Writes bench/results/generate_by_hand.json and prints a Markdown table (bench/report.py puts
it in docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import common
import numpy as np
from generate_gpt import session, timed_generation
from report import generate_by_hand as render

SPECS = {
    "specs/tiny_gpt_by_hand.dl": {
        "width": 768,
        "heads": 12,
        "depth": 12,
        "scale": 0.125,
        "context": 1024,
    },
    "specs/swiglu_decoder.dl": {
        "width": 768,
        "heads": 12,
        "hidden": 2048,
        "depth": 12,
        "context": 1024,
    },
}
VOCAB = 256


def onnx_runs(spec, state: dict, out: Path, prompt: list[int], new: int, threads: int) -> dict:
    from dslc.runtime.generate import _onnx_cache, onnx_model

    runs = {}
    for name, fused, kv in (
        ("cache", True, True),
        ("cache_decomposed", False, True),
        ("recompute", True, False),
    ):
        path = out / f"{name}.onnx"
        spec.onnx_export(state, fused=fused, kv_cache=kv).write(path)
        m = onnx_model(str(path), 1024)
        if kv:  # the same session options as the other paths
            m.cached = _onnx_cache(session(path, threads), "tokens", "logits")
        runs[f"onnx_{name}"] = timed_generation(m, prompt, new, kv)
        print(name, f"{runs[f'onnx_{name}']['tokens_per_s']:.2f} tokens/s", file=sys.stderr)
    return runs


def torch_runs(path: str, params: dict, module, out: Path, prompt: list[int], new: int) -> dict:
    from dslc.runtime.generate import torch_model
    from dslc.runtime.train.checkpoint import save_weights

    save_weights(out / "w.safetensors", module.state_dict(), {})
    tm, runs = torch_model(path, str(out / "w.safetensors"), params), {}
    for cache in (True, False):
        key = "torch_cache" if cache else "torch_recompute"
        runs[key] = timed_generation(tm, prompt, new, cache)
        print(key, f"{runs[key]['tokens_per_s']:.2f} tokens/s", file=sys.stderr)
    return runs


def one_spec(path: str, params: dict, prompt: list[int], args) -> dict[str, Any]:
    import torch

    from dslc.api import load

    spec = load(path, params)
    with tempfile.TemporaryDirectory(prefix="dslc-bench-hand-") as tmp:
        out = Path(tmp)
        torch.manual_seed(0)
        module = spec.torch_namespace()["create_model"]().eval()
        state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
        runs = onnx_runs(spec, state, out, prompt, args.new, args.threads)
        runs |= torch_runs(path, params, module, out, prompt, args.new)
    first = runs["onnx_cache"]["tokens"]
    return {
        "params": params,
        "parameters": spec.graph.param_count(),
        "same_tokens": {k: r.pop("tokens") == first for k, r in runs.items()},
        "runs": runs,
    }


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--torch-threads", type=int, help="default: --threads")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    args = p.parse_args()
    torch.set_num_threads(args.torch_threads or args.threads)
    data: dict[str, Any] = {"machine": common.machine(), "threads": args.threads}
    data |= {"torch_threads": args.torch_threads or args.threads}
    data |= {"prompt": args.prompt, "new": args.new}
    prompt = np.random.default_rng(0).integers(0, VOCAB, args.prompt).tolist()
    data["specs"] = {path: one_spec(path, params, prompt, args) for path, params in SPECS.items()}
    print("wrote", common.write_json("generate_by_hand", data))
    print(render(data))


if __name__ == "__main__":
    main()
