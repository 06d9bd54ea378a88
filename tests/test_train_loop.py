"""dslc train end to end, in-process on a tiny spec: what a run leaves behind (metrics.jsonl,
curves.png, safetensors weights, model.onnx), early stopping, gradient clipping, and the
errors around a run directory."""

from __future__ import annotations

import io
import json
import struct
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file
from test_train_data import (
    TINY,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    write_tiny,
)

import dslc
from dslc.cli import main
from dslc.runtime.train.report import FIELDS


def run_train(spec: str, train: str, out, *extra: str) -> int:
    return main(["train", spec, "--data", train, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished run with --export-onnx, shared by the tests that read its files."""
    tmp = tmp_path_factory.mktemp("run")
    spec, train, val = write_tiny(tmp)
    code = run_train(spec, train, tmp / "run", "--val", val, "--epochs", "4", "--export-onnx")
    return tmp, spec, val, code


def test_metrics_jsonl_has_one_well_formed_row_per_epoch(finished):
    tmp, _, _, code = finished
    assert code == 0
    rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["step"] for r in rows] == [8, 16, 24, 32]  # 64 examples, batch 8
    for r in rows:
        assert tuple(r) == (*FIELDS, "val_macro_f1")  # 3 classes: no top-5 accuracy
        assert r["lr"] == 0.1 and r["seconds"] >= 0 and 0 <= r["val_accuracy"] <= 1
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] / 2  # three clusters are easy
    assert rows[-1]["val_accuracy"] == 1.0


def test_curves_png_is_a_png(finished):
    raw = (finished[0] / "run" / "curves.png").read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", raw[16:24])
    assert (width, height) == (1000, 400)  # loss and accuracy side by side


def test_val_loss_matches_the_best_weights(finished):
    """best.safetensors holds the weights of the epoch with the lowest val_loss: recompute it."""
    tmp, spec, val, _ = finished
    rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    ns = dslc.load(spec).torch_namespace()
    model = ns["create_model"]().eval()
    model.load_state_dict(load_file(tmp / "run" / "best.safetensors"))
    a = {k: torch.from_numpy(v) for k, v in np.load(val).items()}
    with torch.no_grad():
        loss = ns["create_loss"]()(model(a["x"]), a["y"]).item()
    assert loss == pytest.approx(min(r["val_loss"] for r in rows), rel=1e-5)


def test_export_onnx_and_compile_with_trained_weights_agree(finished, capsys, tmp_path):
    tmp, spec, val, _ = finished
    onnx_path = tmp_path / "compiled.onnx"
    best = str(tmp / "run" / "best.safetensors")
    assert main(["compile", spec, "--target", "onnx", "--weights", best, "-o", str(onnx_path)]) == 0
    x = np.load(val)["x"]
    model = dslc.load(spec).torch_module().eval()
    model.load_state_dict(load_file(best))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    for path in (tmp / "run" / "model.onnx", onnx_path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"x": x})
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_export_onnx_reports_the_parity(tmp_path, capsys):
    spec, train, val = write_tiny(tmp_path)
    assert (
        run_train(spec, train, tmp_path / "r", "--val", val, "--epochs", "1", "--export-onnx") == 0
    )
    err = capsys.readouterr().err
    assert "model.onnx from best.safetensors: max |torch - onnxruntime| = " in err
    assert "on 8 validation examples (agree, tolerance 1e-05)" in err


def test_early_stopping_stops_after_patience(tmp_path, capsys):
    # lr 1e-30 leaves every weight unchanged, so val_loss never improves after epoch 1
    spec = TINY.replace("lr=0.1", "lr=1e-30").replace("epochs = 3", "epochs = 20")
    spec = spec.replace("batch_size = 8", "batch_size = 32\n    early_stopping = 2")
    spec_path, train, val = write_tiny(tmp_path, spec)
    assert run_train(spec_path, train, tmp_path / "r", "--val", val) == 0
    rows = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3
    assert "stopped early after 3 epochs" in capsys.readouterr().err


def test_grad_clip_bounds_each_step(tmp_path):
    """With plain SGD at lr 1, one step moves the weights by the clipped gradient: norm <= 1e-3."""
    spec = TINY.replace("sgd(lr=0.1, momentum=0.9)", "sgd(lr=1.0)")
    spec = spec.replace("batch_size = 8", "batch_size = 64\n    grad_clip = 0.001")
    spec_path, train, val = write_tiny(tmp_path, spec)
    assert run_train(spec_path, train, tmp_path / "r", "--val", val, "--epochs", "1") == 0
    torch.manual_seed(0)
    before = dslc.load(spec_path).torch_module().state_dict()
    after = load_file(tmp_path / "r" / "last.safetensors")
    moved = torch.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before))
    assert 0.0009 < moved.item() <= 0.001 + 1e-7


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    spec, train, val = write_tiny(tmp_path)
    for out, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        args = ("--val", val, "--epochs", "1", "--seed", seed)
        assert run_train(spec, train, tmp_path / out, *args) == 0
    a, b, c = (load_file(tmp_path / o / "last.safetensors") for o in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_an_existing_run_needs_resume(tmp_path, capsys):
    spec, train, val = write_tiny(tmp_path)
    assert run_train(spec, train, tmp_path / "r", "--val", val, "--epochs", "1") == 0
    assert run_train(spec, train, tmp_path / "r", "--val", val, "--epochs", "1") == 1
    assert "already holds a run" in capsys.readouterr().err
    args = ("--val", val, "--epochs", "2", "--resume", "--batch-size", "4")
    assert run_train(spec, train, tmp_path / "r", *args) == 1
    assert "used batch_size 8, not 4" in capsys.readouterr().err
    assert run_train(spec, train, tmp_path / "new", "--val", val, "--resume") == 1
    assert "trainer.pt does not exist" in capsys.readouterr().err


def test_resume_after_the_last_epoch_trains_more_epochs(tmp_path):
    spec, train, val = write_tiny(tmp_path)
    assert run_train(spec, train, tmp_path / "r", "--val", val, "--epochs", "1") == 0
    assert run_train(spec, train, tmp_path / "r", "--val", val, "--epochs", "2", "--resume") == 0
    assert run_train(spec, train, tmp_path / "s", "--val", val, "--epochs", "2") == 0
    r, s = (load_file(tmp_path / d / "last.safetensors") for d in "rs")
    assert all(torch.equal(r[k], s[k]) for k in r)


def test_a_spec_without_train_section(tmp_path, capsys):
    (tmp_path / "m.dl").write_text("model M { input x: f32[N, 2]  output y = x -> linear(1) }")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32))
    assert run_train(str(tmp_path / "m.dl"), str(tmp_path / "d.npz"), tmp_path / "r") == 1
    assert "model M has no train section" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_device_cuda_without_cuda(tmp_path, capsys):
    spec, train, _ = write_tiny(tmp_path)
    assert run_train(spec, train, tmp_path / "r", "--device", "cuda") == 1
    err = capsys.readouterr().err
    assert "--device cuda: CUDA is not available" in err and "hint: use --device cpu" in err
    assert "Traceback" not in err


def test_val_split_is_fixed_by_the_seed(tmp_path, capsys):
    spec, train, _ = write_tiny(tmp_path)
    assert run_train(spec, train, tmp_path / "r", "--val-split", "0.25", "--epochs", "1") == 0
    assert "on 48 examples, 16 validation" in capsys.readouterr().err
    assert run_train(spec, train, tmp_path / "s", "--val-split", "0", "--epochs", "1") == 0
    row = json.loads((tmp_path / "s" / "metrics.jsonl").read_text())
    assert row["val_loss"] is None and row["val_accuracy"] is None


def test_epochs_flag_reaches_the_schedule(tmp_path):
    """one_cycle lays its steps out over TRAINING["epochs"]; --epochs must change that, or
    the scheduler would step past its end (torch raises) or stop short."""
    spec = TINY.replace("epochs = 3", "epochs = 1\n    schedule = one_cycle(max_lr=0.5)")
    spec_path, train, val = write_tiny(tmp_path, spec)
    assert run_train(spec_path, train, tmp_path / "r", "--val", val, "--epochs", "4") == 0
    rows = [
        json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    ]
    lrs = [r["lr"] for r in rows]
    assert len(lrs) == 4 and lrs[0] > 0.4 and lrs[-1] < 0.01  # warmed up, then annealed


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_one_line_per_epoch_otherwise(tmp_path, monkeypatch, capsys):
    spec, train, val = write_tiny(tmp_path)
    assert run_train(spec, train, tmp_path / "a", "--val", val, "--epochs", "2") == 0
    piped = capsys.readouterr().err
    assert "step/s" not in piped and "\r" not in piped
    assert [line[:12] for line in piped.splitlines() if line.startswith("epoch")] == [
        "epoch 1/2  t",
        "epoch 2/2  t",
    ]
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert run_train(spec, train, tmp_path / "b", "--val", val, "--epochs", "1") == 0
    shown = terminal.getvalue()
    assert "epoch 1/1:" in shown and "0/8 [" in shown and "loss=" in shown and "ex_s=" in shown
    assert "epoch 1/1  train_loss" in shown  # the summary line stays after the bar
