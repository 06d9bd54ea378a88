"""--precision fp16 on this CPU-only machine: the GradScaler path of dslc train runs for real
(torch's CPU float16 autocast and GradScaler("cpu"), the arithmetic CUDA runs). A step is the
one torch's AMP recipe makes by hand (scale, backward, unscale, clip the true gradients, step,
update); training lowers the loss; a gradient that overflows float16 makes the scaler skip the
step and halve its scale; --resume continues with the scale the run had reached."""

from __future__ import annotations

import json

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
from dslc.runtime.train import checkpoint

PLAIN = TINY.replace("sgd(lr=0.1, momentum=0.9)", "sgd(lr=0.1)")
CLIPPED = PLAIN.replace("batch_size = 8", "batch_size = 8\n    grad_clip = 0.5")
LOUD = 100.0  # inputs this large make float16 gradients overflow at the first scale, 2 ** 16


def _train(tmp_path, spec: str, name: str, *extra: str, loud: bool = False) -> int:
    (tmp_path / "s.dl").write_text(spec)
    arrays = tiny_arrays(64)
    if loud:
        arrays["x"] = arrays["x"] * LOUD
    np.savez(tmp_path / "d.npz", **arrays)
    args = ["train", str(tmp_path / "s.dl"), "--data", str(tmp_path / "d.npz"), "--val-split", "0"]
    return main([*args, "--out", str(tmp_path / name), "--precision", "fp16", *extra])


def _by_hand(tmp_path, spec: str, loud: bool = False):
    """The model as the run starts it, its first batch of 64 (the run's shuffle), a scaler."""
    (tmp_path / "s.dl").write_text(spec)
    torch.manual_seed(0)
    model = dslc.load(str(tmp_path / "s.dl")).torch_namespace()["create_model"]()
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    arrays = tiny_arrays(64)
    x, y = torch.from_numpy(arrays["x"])[order], torch.from_numpy(arrays["y"])[order]
    return model, x * LOUD if loud else x, y, torch.amp.GradScaler("cpu")


def test_a_step_is_torchs_amp_recipe_with_clipping_of_the_true_gradients(tmp_path, capsys):
    """One step on the whole set under fp16 with grad_clip = 0.5, against the same step by
    hand; the clip bites (the true norm is larger), so clipping the scaled gradients, 2 ** 16
    times too large, would make another update; and the float32 step is another."""
    extra = ("--batch-size", "64", "--epochs", "1")
    assert _train(tmp_path, CLIPPED, "fp16", *extra) == 0
    assert "--precision fp16 on CPU is slow" in capsys.readouterr().err
    got = load_file(tmp_path / "fp16" / "last.safetensors")
    model, x, y, scaler = _by_hand(tmp_path, CLIPPED)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.autocast("cpu", dtype=torch.float16):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
    assert logits.dtype == torch.float16
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    scaler.step(optimizer)
    scaler.update()
    assert norm > 0.5
    for key, value in model.state_dict().items():
        assert got[key].dtype == torch.float32  # the weights stay float32
        torch.testing.assert_close(got[key], value, atol=1e-7, rtol=0)
    state = checkpoint.load_state(tmp_path / "fp16")["scaler"]
    assert state == scaler.state_dict() and state["scale"] == 2.0**16  # no overflow
    assert _train(tmp_path, CLIPPED, "fp32", *extra, "--precision", "fp32") == 0
    fp32 = load_file(tmp_path / "fp32" / "last.safetensors")
    assert max((got[k] - fp32[k]).abs().max().item() for k in fp32) > 1e-6  # float16 did it


def test_fp16_training_lowers_the_loss_as_fp32_does(tmp_path):
    """Eight epochs: the loss falls to a fifth, each epoch's within 0.02 of fp32's."""

    def losses(name: str, *extra: str) -> list[float]:
        assert _train(tmp_path, TINY, name, "--epochs", "8", *extra) == 0
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["train_loss"] for line in lines]

    fp16, fp32 = losses("fp16"), losses("fp32", "--precision", "fp32")
    assert fp16[-1] < 0.2 * fp16[0], fp16
    np.testing.assert_allclose(fp16, fp32, atol=0.02)


def test_an_overflowing_gradient_skips_the_step_and_halves_the_scale(tmp_path):
    """Inputs in the hundreds: at a scale of 2 ** 16 the float16 gradients overflow (checked
    by hand), so the run's one step leaves the weights as they started and halves the scale."""
    model, x, y, scaler = _by_hand(tmp_path, PLAIN, loud=True)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.autocast("cpu", dtype=torch.float16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    assert torch.isfinite(loss) and not all(p.grad.isfinite().all() for p in model.parameters())
    assert _train(tmp_path, PLAIN, "run", "--batch-size", "64", "--epochs", "1", loud=True) == 0
    got = load_file(tmp_path / "run" / "last.safetensors")
    for key, value in start.items():
        assert torch.equal(got[key], value), key
    assert checkpoint.load_state(tmp_path / "run")["scaler"]["scale"] == 2.0**15


@pytest.fixture
def scale_dropped(monkeypatch):
    """A Trainer.restore that forgets the checkpoint's scaler: the run then starts from 2 ** 16."""
    from dslc.runtime.train.loop import Trainer

    restore = Trainer.restore

    def forgetting(self, state, path):
        restore(self, {**state, "scaler": None}, path)

    monkeypatch.setattr(Trainer, "restore", forgetting)


def test_resume_continues_with_the_scale_reached(tmp_path, request):
    """Batches of 8 of loud inputs: the first steps overflow until the scale is small enough.
    One epoch and a --resume to the second give the weights and scaler state of two epochs
    at once; a resume that forgot the scale would overflow again, and train otherwise."""
    loud = ("--batch-size", "8")
    assert _train(tmp_path, PLAIN, "once", *loud, "--epochs", "2", loud=True) == 0
    assert _train(tmp_path, PLAIN, "twice", *loud, "--epochs", "1", loud=True) == 0
    first = checkpoint.load_state(tmp_path / "twice")["scaler"]
    assert first["scale"] < 2.0**16  # the first epoch lowered it
    resume = (*loud, "--epochs", "2", "--resume")
    assert _train(tmp_path, PLAIN, "twice", *resume, loud=True) == 0
    once, twice = (load_file(tmp_path / n / "last.safetensors") for n in ("once", "twice"))
    for key, value in once.items():
        assert torch.equal(twice[key], value), key
    assert (
        checkpoint.load_state(tmp_path / "twice")["scaler"]
        == checkpoint.load_state(tmp_path / "once")["scaler"]
    )
    # the comparison can fail: without the saved scale the second epoch trains otherwise
    assert _train(tmp_path, PLAIN, "forgot", *loud, "--epochs", "1", loud=True) == 0
    request.getfixturevalue("scale_dropped")
    assert _train(tmp_path, PLAIN, "forgot", *resume, loud=True) == 0
    forgot = load_file(tmp_path / "forgot" / "last.safetensors")
    assert any(not torch.equal(forgot[k], v) for k, v in once.items())
