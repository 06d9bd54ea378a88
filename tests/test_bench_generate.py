"""bench/generate_by_hand.py runs: a hand-written decoder at a toy size, end to end, once. What
it asserts is behaviour, not speed: every path (ONNX with and without the cache, fused and
decomposed; the generated PyTorch module with its KVCache and recomputing) gives the same
greedy tokens, and the report renders each path."""

from __future__ import annotations

import argparse
import sys

import numpy as np
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import generate_by_hand  # noqa: E402
import report  # noqa: E402

SMALL = {"width": 32, "heads": 2, "depth": 1, "scale": 0.25, "context": 64}


def test_a_toy_decoder_runs_every_path_and_renders(monkeypatch):
    monkeypatch.chdir(ROOT)  # the specs' paths are the repository's
    args = argparse.Namespace(new=6, threads=1)
    prompt = np.random.default_rng(0).integers(0, 256, 8).tolist()
    result = generate_by_hand.one_spec("specs/tiny_gpt_by_hand.dl", SMALL, prompt, args)
    assert set(result["runs"]) == set(report.HAND_LABELS)
    assert all(result["same_tokens"].values()), result["same_tokens"]
    data = {"machine": generate_by_hand.common.machine(), "threads": 1, "prompt": 8, "new": 6}
    text = report.generate_by_hand(data | {"specs": {"specs/tiny_gpt_by_hand.dl": result}})
    for label in report.HAND_LABELS.values():
        assert f"| {label} |" in text
