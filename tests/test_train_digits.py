"""The bundled example: scikit-learn's digits, written by examples/digits/make_data.py, train
specs/digits_cnn.dl to at least 97% validation accuracy on CPU with the spec's settings."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import ROOT
from test_train_data import one_thread  # noqa: F401  (autouse: one torch thread)

from dslc.cli import main

pytest.importorskip("sklearn")


def make_data(out):
    spec = importlib.util.spec_from_file_location(
        "make_data", ROOT / "examples/digits/make_data.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make(out)


def test_make_data_writes_the_declared_arrays(tmp_path):
    assert make_data(tmp_path) == (1438, 359)
    train, val = np.load(tmp_path / "train.npz"), np.load(tmp_path / "val.npz")
    assert train["x"].shape == (1438, 1, 8, 8) and train["x"].dtype == np.float32
    assert train["label"].shape == (1438,) and train["label"].dtype == np.int64
    assert 0.0 == train["x"].min() and train["x"].max() == 1.0
    assert sorted(set(val["label"].tolist())) == list(range(10))


def test_digits_cnn_reaches_97_percent(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    make_data(tmp_path / "digits")
    out = tmp_path / "runs" / "digits"
    args = ["train", "specs/digits_cnn.dl", "--data", str(tmp_path / "digits" / "train.npz")]
    assert main([*args, "--val", str(tmp_path / "digits" / "val.npz"), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 15
    assert max(r["val_accuracy"] for r in rows) >= 0.97
    assert "best val_accuracy 0.9" in capsys.readouterr().err


def test_the_vae_trains_on_the_digits_and_its_decoder_exports(tmp_path, monkeypatch):
    """dslc train on specs/vae.dl (no targets: the loss is the negative ELBO of the input),
    then the decoder alone, with the trained weights, to ONNX; it turns latent samples into
    64 pixel probabilities in onnxruntime."""
    import onnxruntime as ort

    monkeypatch.chdir(ROOT)
    make_data(tmp_path / "digits")
    out = tmp_path / "runs" / "vae"
    data = ["--data", str(tmp_path / "digits" / "vae_train.npz")]
    val = ["--val", str(tmp_path / "digits" / "vae_val.npz")]
    assert main(["train", "specs/vae.dl", *data, *val, "--out", str(out), "--epochs", "8"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val_loss"] < 0.8 * rows[0]["val_loss"]
    decoder = tmp_path / "decoder.onnx"
    weights = ["--weights", str(out / "best.safetensors")]
    args = ["compile", "specs/vae.dl", "--target", "onnx", "--part", "decoder1", *weights]
    assert main([*args, "-o", str(decoder)]) == 0
    z = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    (images,) = ort.InferenceSession(str(decoder)).run(None, {"z": z})
    assert images.shape == (5, 64) and ((images > 0) & (images < 1)).all()
