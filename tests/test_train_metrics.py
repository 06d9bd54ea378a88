"""Validation metrics (runtime/train/metrics.py) against scikit-learn and torch: accuracy,
top-5 accuracy, macro F1, MAE, RMSE and per-output losses, accumulated over uneven batches; in a
run's metrics.jsonl and curves.png for a multi-output spec; `dslc eval` printing them and
writing the confusion matrix; reduce-on-plateau stepping as torch's ReduceLROnPlateau."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm
from test_train_data import (
    TINY,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_arrays,
    write_tiny,
)

import dslc
from dslc.cli import main
from dslc.runtime.train.contract import contract
from dslc.runtime.train.metrics import Meter

TWO_HEADS = """
model TwoHeads {
    input x: f32[N, 4]
    output logits = x -> linear(10)
    output v = x -> linear(2)
}

train {
    target y: i64[N]
    target t: f32[N, 2]
    loss = cross_entropy(logits, y) + 0.5 * mse(v, t)
    optimizer = sgd(lr=0.1)
}
"""


def test_meter_agrees_with_sklearn_and_torch(tmp_path):
    (tmp_path / "two.dl").write_text(TWO_HEADS)
    c = contract(dslc.load(str(tmp_path / "two.dl")))
    g = torch.Generator().manual_seed(0)
    n = 203
    logits, v = torch.randn(n, 10, generator=g), torch.randn(n, 2, generator=g)
    y = torch.randint(0, 9, (n,), generator=g)  # class 9 never a target: sklearn's averaging
    y[:40] = logits[:40].argmax(dim=1)  # some right, so that F1 is not near 0
    t = torch.randn(n, 2, generator=g)
    meter = Meter(c)
    for start, stop in ((0, 64), (64, 128), (128, 200), (200, n)):  # uneven batches
        batch = slice(start, stop)
        values = {"x": None, "logits": logits[batch], "v": v[batch], "y": y[batch], "t": t[batch]}
        meter.add(values, stop - start)
    r = meter.results()
    pred = logits.argmax(dim=1).numpy()
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert r["top5_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(y, logits.numpy(), k=5, labels=range(10))
    )
    assert r["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert r["mae_v"] == pytest.approx(skm.mean_absolute_error(t, v), rel=1e-6)
    assert r["rmse_v"] == pytest.approx(math.sqrt(skm.mean_squared_error(t, v)), rel=1e-6)
    assert r["loss_logits"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert r["loss_v"] == pytest.approx(F.mse_loss(v, t).item(), rel=1e-6)
    assert (
        meter.confusion["accuracy"].numpy().tolist()
        == skm.confusion_matrix(y, pred, labels=range(10)).tolist()
    )


def test_multitask_head_logs_each_output(tmp_path):
    """specs/multitask_head.dl: each term's validation and training loss and each regression's
    error per epoch in metrics.jsonl; a weighted sum of the terms is the validation loss, and
    the training loss."""
    rng = np.random.default_rng(0)
    n = 96
    feats = rng.standard_normal((n, 64)).astype(np.float32)
    teacher = rng.dirichlet(np.ones(5), n).astype(np.float32)
    arrays = {
        "features": feats,
        "teacher": teacher,
        "box_target": rng.standard_normal((n, 4)).astype(np.float32),
        "size_target": rng.standard_normal((n, 1)).astype(np.float32),
        "depth_target": rng.standard_normal((n, 1)).astype(np.float32),
    }
    np.savez(tmp_path / "d.npz", **arrays)
    out = tmp_path / "run"
    args = [
        "train",
        "specs/multitask_head.dl",
        "--data",
        str(tmp_path / "d.npz"),
        "--out",
        str(out),
    ]
    assert main([*args, "--epochs", "2"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        for output in ("log_probs", "box", "size", "depth"):
            assert r[f"val_loss_{output}"] > 0
        for output in ("box", "size", "depth"):  # the regression terms
            assert r[f"val_rmse_{output}"] >= r[f"val_mae_{output}"] > 0
        for split in ("val", "train"):  # each term while training too, on the same batches
            weighted = r[f"{split}_loss_log_probs"] + r[f"{split}_loss_box"]
            weighted += 0.5 * r[f"{split}_loss_size"] + r[f"{split}_loss_depth"]
            assert weighted == pytest.approx(r[f"{split}_loss"], rel=1e-5)
    assert rows[1]["train_loss_box"] != rows[0]["train_loss_box"]  # the epoch's, not a total
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dslc_eval_prints_the_metrics_and_writes_the_confusion_matrix(tmp_path, capsys):
    spec, data, val = write_tiny(tmp_path)
    out = tmp_path / "run"
    assert main(["train", spec, "--data", data, "--val", val, "--out", str(out)]) == 0
    capsys.readouterr()
    png = tmp_path / "plots" / "cm.png"
    weights = str(out / "best.safetensors")
    assert main(["eval", spec, "--weights", weights, "--data", val, "--confusion", str(png)]) == 0
    printed, err = capsys.readouterr()
    lines = dict(line.split() for line in printed.splitlines()[1:])
    # the same numbers as the best epoch's validation, computed by dslc train
    best = min(
        (json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()),
        key=lambda r: r["val_loss"],
    )
    assert float(lines["loss"]) == pytest.approx(best["val_loss"], abs=1e-4)
    assert float(lines["accuracy"]) == pytest.approx(best["val_accuracy"], abs=1e-4)
    assert float(lines["macro_f1"]) == pytest.approx(best["val_macro_f1"], abs=1e-4)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in err


def test_dslc_eval_mistakes_are_exit_1(tmp_path, capsys):
    spec, data, val = write_tiny(tmp_path)
    assert main(["eval", spec, "--weights", str(tmp_path / "none"), "--data", val]) == 1
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "w.safetensors").write_bytes(b"garbage")
    assert main(["eval", spec, "--weights", str(tmp_path / "w.safetensors"), "--data", val]) == 1
    assert "cannot read weights" in capsys.readouterr().err
    bad = tiny_arrays(8)
    bad["y"][3] = 7
    np.savez(tmp_path / "bad.npz", **bad)
    weights = tmp_path / "w.safetensors"
    assert main(["eval", spec, "--weights", str(weights), "--data", str(tmp_path / "bad.npz")]) == 1
    assert "holds class 7 at index 3" in capsys.readouterr().err


def test_plateau_steps_as_torch_reduce_lr_on_plateau(tmp_path):
    """specs/mlp_regressor.dl on noise (nothing to learn, so the loss stalls): the learning
    rate of each epoch is what torch's ReduceLROnPlateau gives for the logged val_loss."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=rng.standard_normal((128, 1)).astype(np.float32))
    out = tmp_path / "run"
    args = ["train", "specs/mlp_regressor.dl", "--data", str(tmp_path / "d.npz")]
    assert main([*args, "--out", str(out), "--epochs", "20", "--param", "hidden=16"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=3e-3)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
    for row in rows:
        assert row["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])
        reference.step(row["val_loss"])
    assert rows[-1]["lr"] < 3e-3  # it did reduce: the comparison can fail


def test_plateau_refuses_a_factor_of_one(tmp_path, capsys):
    spec = TINY.replace("batch_size = 8", "schedule = plateau(factor=1.0)\n    batch_size = 8")
    (tmp_path / "s.dl").write_text(spec)
    assert main(["check", str(tmp_path / "s.dl")]) == 1
    assert "plateau: factor 1.0 never changes the learning rate" in capsys.readouterr().err


def test_tensorboard_event_files_hold_the_metrics(tmp_path):
    """With the optional tensorboard package: the run's scalars, read back by TensorBoard's
    own reader. (Skipped where it is not installed; runs without it write nothing.)"""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec, data, val = write_tiny(tmp_path)
    out = tmp_path / "run"
    assert main(["train", spec, "--data", data, "--val", val, "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for key in ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr"):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [r["epoch"] for r in rows]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in rows], rel=1e-6)


def test_without_tensorboard_nothing_is_written(tmp_path, monkeypatch):
    from dslc.runtime.train import board

    monkeypatch.setattr(board, "available", lambda: False)
    spec, data, val = write_tiny(tmp_path)
    assert main(["train", spec, "--data", data, "--out", str(tmp_path / "run")]) == 0
    assert not (tmp_path / "run" / "tensorboard").exists()
