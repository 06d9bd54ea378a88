"""Gradient accumulation and mixed precision in dslc train: 4 accumulated batches of 8 make the
same update as one batch of 32 (mean and sum losses, with a penalty); bf16 autocast makes the
update torch.autocast makes (fp16 and its grad scaler: tests/test_train_fp16.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train_data import (
    TINY,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_arrays,
)

import dslc
from dslc.cli import main


def run(tmp_path, spec: str, name: str, *extra: str) -> dict:
    (tmp_path / "s.dl").write_text(spec)
    if not (tmp_path / "d.npz").exists():
        np.savez(tmp_path / "d.npz", **tiny_arrays(64))
    args = ["train", str(tmp_path / "s.dl"), "--data", str(tmp_path / "d.npz"), "--val-split", "0"]
    assert main([*args, "--out", str(tmp_path / name), "--epochs", "2", *extra]) == 0
    return load_file(tmp_path / name / "last.safetensors")


SUM = TINY.replace("cross_entropy(logits, y)", 'cross_entropy(logits, y, reduction="sum")')
PENALTY = TINY.replace("cross_entropy(logits, y)", "cross_entropy(logits, y) + 1e-2 * l2()")
ADAM = TINY.replace("sgd(lr=0.1, momentum=0.9)", "adam(lr=1e-2)")


@pytest.mark.parametrize("spec", [TINY, SUM, PENALTY, ADAM], ids=["mean", "sum", "l2", "adam"])
def test_four_batches_of_8_accumulated_equal_one_batch_of_32(tmp_path, spec):
    one = run(tmp_path, spec, "one", "--batch-size", "32")
    four = run(tmp_path, spec, "four", "--batch-size", "8", "--accumulate", "4")
    eight = run(tmp_path, spec, "eight", "--batch-size", "8")
    for key in one:
        torch.testing.assert_close(four[key], one[key], atol=1e-6, rtol=1e-5)
    # the comparison can fail: batches of 8 without accumulation train otherwise
    assert max((eight[k] - one[k]).abs().max().item() for k in one) > 1e-3


def test_accumulation_counts_optimizer_steps(tmp_path):
    import json

    run(tmp_path, TINY, "acc", "--batch-size", "8", "--accumulate", "3")
    rows = [json.loads(x) for x in (tmp_path / "acc" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]  # ceil(64 / 24) steps per epoch


def test_bf16_autocast_makes_torch_autocasts_update(tmp_path):
    """One step on the whole set (batch 64, plain SGD) under bf16 autocast, against the same
    step done by hand with torch.autocast; and it differs from the float32 step."""
    spec = TINY.replace("sgd(lr=0.1, momentum=0.9)", "sgd(lr=0.1)")
    extra = ("--batch-size", "64", "--epochs", "1")
    bf16 = run(tmp_path, spec, "bf16", *extra, "--precision", "bf16")
    fp32 = run(tmp_path, spec, "fp32", *extra)
    ns = dslc.load(str(tmp_path / "s.dl")).torch_namespace()
    torch.manual_seed(0)
    model = ns["create_model"]()
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    arrays = tiny_arrays(64)
    x, y = torch.from_numpy(arrays["x"])[order], torch.from_numpy(arrays["y"])[order]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
    for key, value in model.state_dict().items():
        assert bf16[key].dtype == torch.float32  # the weights stay float32
        torch.testing.assert_close(bf16[key], value, atol=1e-6, rtol=1e-5)
    assert max((bf16[k] - fp32[k]).abs().max().item() for k in fp32) > 1e-5


def test_accumulate_with_mixed_reductions_is_refused(tmp_path, capsys):
    spec = TINY.replace(
        "cross_entropy(logits, y)",
        'cross_entropy(logits, y) + cross_entropy(logits, y, reduction="sum")',
    )
    (tmp_path / "s.dl").write_text(spec)
    np.savez(tmp_path / "d.npz", **tiny_arrays(64))
    args = ["train", str(tmp_path / "s.dl"), "--data", str(tmp_path / "d.npz")]
    assert main([*args, "--out", str(tmp_path / "r"), "--accumulate", "2"]) == 1
    assert "--accumulate needs the loss terms reduced alike" in capsys.readouterr().err
