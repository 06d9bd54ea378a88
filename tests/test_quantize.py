"""Quantized ONNX (`--quantize`, runtime/quantize.py) and its accuracy gate (`--validate`,
runtime/gate.py): the models run in onnxruntime and stay close to the PyTorch module under the
same weights; the gate passes a good model and refuses (writing nothing) a broken one; the
report names what stayed float; bad flags and data are errors with exit 1."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT
from test_train_data import one_thread  # noqa: F401  (autouse: one torch thread)

import dslc
from dslc.cli import main

TINY_GPT, DIGITS = str(ROOT / "specs/tiny_gpt.dl"), str(ROOT / "specs/digits_cnn.dl")


def _weights(spec_path, tmp_path):
    torch.manual_seed(0)
    module = dslc.load(spec_path).torch_module().eval()
    path = tmp_path / "w.pt"
    torch.save(module.state_dict(), path)
    return module, path


def _run(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_dynamic_int8_transformer_is_close_to_torch_and_names_float_ops(tmp_path, capsys):
    module, weights = _weights(TINY_GPT, tmp_path)
    out = tmp_path / "q.onnx"
    args = ["compile", TINY_GPT, "--target", "onnx", "--weights", str(weights), "-o", str(out)]
    assert main([*args, "--quantize", "int8"]) == 0
    err = capsys.readouterr().err
    # 2 blocks x (qkv, proj, fc1, fc2) + the head; the tied table's lookup too.
    assert "quantized (int8 dynamic): 1 Gather, 9 MatMulInteger" in err
    assert "blocks.0.attn1/Attention, blocks.1.attn1/Attention" in err  # kept from the tools
    assert "pos1/Slice" in err  # the positional table: Slice has no int8 form
    model = onnx.load(str(out))
    assert model.ir_version == 11  # opset 23's, not the newest onnx writes (onnxruntime: <= 13)
    tokens = np.random.default_rng(0).integers(0, 256, (3, 16))
    with torch.no_grad():
        expected = module(torch.from_numpy(tokens)).numpy()
    got = _run(out, {"tokens": tokens})
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() < 0.1 * scale
    assert (got.argmax(-1) == expected.argmax(-1)).mean() > 0.9
    assert out.stat().st_size < 0.35 * dslc.load(TINY_GPT).param_count * 4


def test_dynamic_int8_recurrent_layers(tmp_path, capsys):
    """An LSTM runs on onnxruntime's int8 kernel, close to torch.nn.LSTM's module; a GRU has
    none and is named as kept in float."""
    spec = str(ROOT / "specs/lstm_classifier.dl")
    module, weights = _weights(spec, tmp_path)
    out = tmp_path / "q.onnx"
    args = ["compile", spec, "--target", "onnx", "--weights", str(weights), "-o", str(out)]
    assert main([*args, "--quantize", "int8"]) == 0
    assert "1 DynamicQuantizeLSTM" in capsys.readouterr().err
    tokens = np.random.default_rng(2).integers(0, 8, (7, 64))
    with torch.no_grad():
        expected = module(torch.from_numpy(tokens)).numpy()
    got = _run(out, {"tokens": tokens})
    assert np.abs(got - expected).max() < 0.1 * np.abs(expected).max()
    gru = ["compile", str(ROOT / "specs/gru_tagger.dl"), "--target", "onnx", "-o", str(out)]
    assert main([*gru, "--quantize", "int8"]) == 0
    assert "kept in float32 (2 nodes: 2 GRU): gru1/GRU, gru1/GRU_2" in capsys.readouterr().err


def test_fp16_keeps_float32_inputs_and_outputs(tmp_path, capsys):
    module, weights = _weights(DIGITS, tmp_path)
    out = tmp_path / "h.onnx"
    args = ["compile", DIGITS, "--target", "onnx", "--weights", str(weights), "-o", str(out)]
    assert main([*args, "--quantize", "fp16"]) == 0
    assert (
        "quantized (fp16, float32 inputs and outputs): 2 Conv, 2 MatMul" in capsys.readouterr().err
    )
    graph = onnx.load(str(out)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = np.random.default_rng(1).random((7, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(out, {"x": x}), expected, atol=2e-3 * np.abs(expected).max())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The digits CNN trained for 4 epochs by dslc train on the bundled example's data."""
    from test_train_digits import make_data

    tmp = tmp_path_factory.mktemp("digits")
    make_data(tmp / "data")
    torch.set_num_threads(1)
    train, val = str(tmp / "data/train.npz"), str(tmp / "data/val.npz")
    args = ["train", DIGITS, "--data", train, "--val", val, "--out", str(tmp / "run")]
    assert main([*args, "--epochs", "4"]) == 0
    return tmp, train, val, str(tmp / "run/best.safetensors")


def _torch_accuracy(weights, val):
    from dslc.runtime.train.checkpoint import load_weights

    module = dslc.load(DIGITS).torch_module()
    load_weights(module, weights)
    data = np.load(val)
    with torch.no_grad():
        logits = module.eval()(torch.from_numpy(data["x"]))
    return float((logits.argmax(1).numpy() == data["label"]).mean())


def test_static_int8_passes_the_gate_within_half_a_point(trained, capsys):
    tmp, train, val, weights = trained
    out = tmp / "int8.onnx"
    args = ["compile", DIGITS, "--target", "onnx", "--weights", weights, "-o", str(out)]
    assert main([*args, "--quantize", "int8", "--calibrate", train, "--validate", val]) == 0
    err = capsys.readouterr().err
    assert "quantized (int8 static QDQ, per channel): 2 Conv, 2 MatMul" in err
    data = np.load(val)
    quantized = float((_run(out, {"x": data["x"]}).argmax(1) == data["label"]).mean())
    reference = _torch_accuracy(weights, val)
    assert reference > 0.9
    assert reference - quantized <= 0.005
    assert f"accuracy float {100 * reference:.2f}%, int8 {100 * quantized:.2f}%" in err


def test_gate_refuses_a_broken_quantization_and_writes_nothing(trained, capsys):
    tmp, _, val, weights = trained
    blank = tmp / "blank.npz"
    np.savez(blank, x=np.zeros((32, 1, 8, 8), np.float32))  # every activation range wrong
    out = tmp / "broken.onnx"
    args = ["compile", DIGITS, "--target", "onnx", "--weights", weights, "-o", str(out)]
    args += ["--quantize", "int8", "--calibrate", str(blank), "--validate", val]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "error: the int8 model's accuracy drops by" in err and "nothing written" in err
    assert "Traceback" not in err and not out.exists()
    assert main([*args, "--force"]) == 0 and out.exists()


def test_train_export_quantizes_and_gates_on_the_validation_data(trained, capsys):
    tmp, train, val, _ = trained
    run = tmp / "run2"
    args = ["train", DIGITS, "--data", train, "--val", val, "--out", str(run), "--epochs", "1"]
    assert main([*args, "--export-onnx", "--quantize", "int8"]) in (0, 1)
    err = capsys.readouterr().err
    assert "validation on 359 examples: accuracy float" in err
    assert (run / "model.onnx").exists()
    assert (run / "model.int8.onnx").exists() == ("nothing written" not in err)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--quantize", "int8"], "--quantize quantizes an ONNX model, not --target torch"),
        (["--target", "onnx", "--calibrate", "x.npz"], "--quantize is not given"),
        (["--target", "onnx", "--quantize", "int8"], "which needs calibration data"),
        (["--target", "onnx", "--quantize", "int8", "--calibrate", "{vae}"], "has no array 'x'"),
        (["--target", "onnx", "--quantize", "int8", "--calibrate", "{bad}"], "bad.npz"),
    ],
)
def test_errors(tmp_path, capsys, args, message):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "vae.npz", image=np.zeros((2, 1, 8, 8), np.float32))
    paths = {"vae": str(tmp_path / "vae.npz"), "bad": str(tmp_path / "bad.npz")}
    args = [a.format(**paths) for a in args]
    out = tmp_path / "m.onnx"
    assert main(["compile", DIGITS, "-o", str(out), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not out.exists()


def test_validate_needs_a_train_section(tmp_path, capsys):
    np.savez(tmp_path / "v.npz", x=np.zeros((2, 3), np.float32))
    args = [
        "compile",
        str(ROOT / "specs/sdpa_block.dl"),
        "--target",
        "onnx",
        "-o",
        str(tmp_path / "m"),
    ]
    assert main([*args, "--quantize", "int8", "--validate", str(tmp_path / "v.npz")]) == 1
    assert "--validate needs the targets and the loss of a train section" in capsys.readouterr().err
