"""Recurrent layers (dslc/ops/recurrent.py) against torch.nn.RNN, LSTM and GRU themselves:
the generated module's state_dict loads into a plain torch.nn module (strict), both give
the same sequence and final states, and the ONNX graph (one RNN/LSTM/GRU node per layer,
gates reordered at build time) agrees with that torch.nn module in onnxruntime at batch
1, 3, 7 and sequence length 1, 7, 64. Then the classifier of specs/lstm_classifier.dl is
trained by `dslc train` on a sequence task made here."""

from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT
from onnx.numpy_helper import to_array
from test_train_data import one_thread  # noqa: F401  (autouse: one torch thread)

import dslc
from dslc.cli import main

# (op, attributes in the spec, the torch.nn constructor's keywords, initial states given)
CASES = [
    ("lstm", "", {}, False),
    ("lstm", ", num_layers=2, bidirectional=true, dropout=0.3", {"num_layers": 2,
     "bidirectional": True, "dropout": 0.3}, True),
    ("gru", ", bidirectional=true", {"bidirectional": True}, True),
    ("gru", ", num_layers=3, bias=false", {"num_layers": 3, "bias": False}, False),
    ("rnn", ', nonlinearity="relu"', {"nonlinearity": "relu"}, True),
    ("rnn", ", num_layers=2, bidirectional=true, bias=false",
     {"num_layers": 2, "bidirectional": True, "bias": False}, True),
]  # fmt: skip
REFERENCE = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
FEATURES, HIDDEN = 5, 6


def spec_for(op: str, attrs: str, states: bool) -> tuple[str, list[str]]:
    depth = "L"
    names = ["h0", "c0"] if op == "lstm" else ["h0"]
    state_inputs = "".join(f"    input {n}: f32[{depth}, N, {HIDDEN}]\n" for n in names)
    given = "".join(f", {n}={n}" for n in names) if states else ""
    outs = ", ".join(["seq", *[n[0] + "n" for n in names]])
    source = (
        "model M {\n"
        f"    input x: f32[N, T, {FEATURES}]\n"
        f"{state_inputs if states else ''}"
        f"    {outs} = x -> {op}({HIDDEN}{attrs}{given})\n"
        + "".join(f"    output {o}\n" for o in outs.split(", "))
        + "}\n"
    )
    return source, names


def compile_case(op: str, attrs: str, kwargs: dict, states: bool):
    layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    source, names = spec_for(op, attrs, states)
    spec = dslc.compile_source(source.replace("f32[L,", f"f32[{layers},"))
    return spec, names, layers


def reference_module(op: str, kwargs: dict, state: dict) -> torch.nn.Module:
    ref = REFERENCE[op](FEATURES, HIDDEN, batch_first=True, **kwargs).eval()
    ref.load_state_dict(state, strict=True)  # the same names and shapes, nothing missing
    return ref


def run_reference(ref, op: str, x, states: list) -> list[np.ndarray]:
    with torch.no_grad():
        if not states:
            seq, final = ref(x)
        else:
            seq, final = ref(x, tuple(states) if op == "lstm" else states[0])
    finals = list(final) if op == "lstm" else [final]
    return [t.numpy() for t in (seq, *finals)]


@pytest.mark.parametrize(("op", "attrs", "kwargs", "states"), CASES)
def test_the_generated_module_is_torch_nn_under_the_same_weights(op, attrs, kwargs, states):
    spec, names, layers = compile_case(op, attrs, kwargs, states)
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    inner = next(m for m in model.modules() if isinstance(m, REFERENCE[op]))
    assert type(inner) is REFERENCE[op] and inner.batch_first
    prefix = f"{op}1."  # the layer's name in the model
    state = {k.removeprefix(prefix): v for k, v in model.state_dict().items()}
    assert all(k.startswith(prefix) for k in model.state_dict())
    torch.manual_seed(1)  # the reference starts elsewhere, then takes the generated weights
    ref = reference_module(op, kwargs, state)
    assert list(state) == list(ref.state_dict())  # PyTorch's order too
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 7, FEATURES, generator=gen)
    given = [torch.randn(layers, 3, HIDDEN, generator=gen) for _ in names] if states else []
    with torch.no_grad():
        got = model(x, *given)
    expected = run_reference(ref, op, x, given)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g.numpy(), e, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("op", "attrs", "kwargs", "states"), CASES)
def test_onnxruntime_agrees_with_torch_nn(op, attrs, kwargs, states):
    """One ONNX node per layer, dynamic N and T: batch 1, 3, 7 by length 1, 7, 64."""
    spec, names, layers = compile_case(op, attrs, kwargs, states)
    torch.manual_seed(0)
    ref = REFERENCE[op](FEATURES, HIDDEN, batch_first=True, **kwargs).eval()
    onnx_model = spec.onnx_model(weights={f"{op}1.{k}": v for k, v in ref.state_dict().items()})
    nodes = [n.op_type for n in onnx_model.graph.node]
    assert nodes.count(op.upper()) == kwargs.get("num_layers", 1)
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 3, 7):
        for length in (1, 7, 64):
            x = rng.standard_normal((batch, length, FEATURES)).astype(np.float32)
            given = [rng.standard_normal((layers, batch, HIDDEN)).astype(np.float32) for _ in names]
            feeds = {"x": x, **dict(zip(names, given, strict=True))} if states else {"x": x}
            got = sess.run(None, feeds)
            expected = run_reference(
                ref, op, torch.from_numpy(x), [torch.from_numpy(g) for g in given] * states
            )
            for g, e in zip(got, expected, strict=True):
                assert g.shape == e.shape
                np.testing.assert_allclose(
                    g, e, rtol=0, atol=1e-5, err_msg=f"batch {batch}, length {length}"
                )


def test_parameters_start_as_pytorch_starts_them():
    """U(-1/sqrt(hidden), 1/sqrt(hidden)) for every weight and bias: nn.LSTM's own reset in
    the generated module, the same distribution drawn by NumPy for an ONNX model."""
    spec, _, _ = compile_case("lstm", ", num_layers=2", {"num_layers": 2}, False)
    bound = 1 / math.sqrt(HIDDEN)
    torch.manual_seed(0)
    for key, t in spec.torch_module().state_dict().items():
        assert t.abs().max() <= bound and t.abs().max() > 0.8 * bound, key
    arrays = {t.name: to_array(t) for t in spec.onnx_model(seed=0).graph.initializer}
    assert {"lstm1.W_l0", "lstm1.R_l1", "lstm1.B_l1"} <= set(arrays)
    values = np.concatenate([a.ravel() for k, a in arrays.items() if k.split(".")[1][0] in "WRB"])
    assert np.abs(values).max() <= bound and np.abs(values).max() > 0.9 * bound


def test_a_pipeline_reads_the_sequence_and_unread_states_are_underscores():
    source = """
    model M {
        input x: f32[N, T, 4]
        output y = x -> lstm(8) -> gru(8) -> linear(2)
    }
    """
    spec = dslc.compile_source(source)
    code = spec.torch_source()
    assert "y, _ = self.lstm1(x)" in code and "y, _ = self.gru1(y)" in code
    assert spec.graph.outputs["y"].type.shape[2] == 2


def test_an_lstm_in_a_repetition_is_a_module_list_loop():
    source = """
    model M {
        input x: f32[N, T, 4]
        output y = x -> linear(8) -> lstm(8) * 3
    }
    """
    spec = dslc.compile_source(source)
    code = spec.torch_source()
    assert "nn.ModuleList([nn.LSTM(8, 8, batch_first=True) for _ in range(3)])" in code
    assert "y, _ = lstm(y)" in code
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    x = torch.randn(2, 5, 4)
    with torch.no_grad():
        h = model.fc1(x)
        for layer in model.lstms:
            h = layer(h)[0]
        np.testing.assert_allclose(model(x).numpy(), h.numpy(), atol=0)


def test_dropout_between_layers_is_training_only():
    spec, _, _ = compile_case("gru", ", num_layers=2, dropout=0.5", {"num_layers": 2}, False)
    torch.manual_seed(0)
    model = spec.torch_module()
    assert model.gru1.dropout == 0.5
    x = torch.randn(4, 6, FEATURES)
    with torch.no_grad():
        assert not torch.equal(model.train()(x)[0], model.train()(x)[0])
        assert torch.equal(model.eval()(x)[0], model.eval()(x)[0])


def which_first(n: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Sequences of tokens from 1..15 holding exactly one 3 and one 5; label 1 where the 3
    comes first. The order decides, not which tokens occur: a bag of words is at chance."""
    tokens = rng.choice([1, 2, 4, *range(6, 16)], (n, length))
    for row in tokens:
        row[rng.choice(length, 2, replace=False)] = (3, 5)
    label = np.argmax(tokens == 3, axis=1) < np.argmax(tokens == 5, axis=1)
    return {"tokens": tokens.astype(np.int64), "label": label.astype(np.int64)}


def test_the_lstm_classifier_learns_which_token_comes_first(tmp_path, monkeypatch):
    """specs/lstm_classifier.dl as written (its embedding, LSTM and train section), trained
    by `dslc train` on 2,000 sequences of 20 tokens: does the 3 come before the 5? Chance is
    50%; it reaches over 95% validation accuracy (measured with seed 0: 0.978 after the
    first epoch, 1.000 from the second on; about 3 s on one thread)."""
    monkeypatch.chdir(ROOT)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", **which_first(2000, 20, rng))
    np.savez(tmp_path / "val.npz", **which_first(500, 20, rng))
    out = tmp_path / "run"
    args = ["train", "specs/lstm_classifier.dl", "--data", str(tmp_path / "train.npz")]
    assert main([*args, "--val", str(tmp_path / "val.npz"), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    assert rows[0]["train_loss"] > 0.3  # it learns, rather than knowing from the start
    assert max(r["val_accuracy"] for r in rows) >= 0.95


def test_a_signal_run_chunk_by_chunk_in_onnx_equals_the_whole_signal_in_torch():
    """specs/streaming_rnn.dl: the final state carried from chunk to chunk through the ONNX
    model gives what torch.nn.RNN gives for the signal in one piece."""
    spec = dslc.load(ROOT / "specs/streaming_rnn.dl")
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    sess = ort.InferenceSession(
        spec.onnx_model(weights=model.state_dict()).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    signal = np.random.default_rng(0).standard_normal((2, 30, 8)).astype(np.float32)
    state = np.zeros((1, 2, 32), np.float32)
    pieces = []
    for start, end in [(0, 1), (1, 8), (8, 23), (23, 30)]:  # 1, 7, 15 and 7 steps
        y, state = sess.run(None, {"chunk": signal[:, start:end], "state": state})
        pieces.append(y)
    ref = torch.nn.RNN(8, 32, nonlinearity="relu", batch_first=True)
    ref.load_state_dict({k[5:]: v for k, v in model.state_dict().items() if k.startswith("rnn1")})
    with torch.no_grad():
        steps, final = ref(torch.from_numpy(signal))
        whole = model.fc1(steps).numpy()
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, rtol=0, atol=1e-5)
    np.testing.assert_allclose(state, final.numpy(), rtol=0, atol=1e-5)
