"""Worked examples from the course, computed by hand, checked in both backends: the generated
PyTorch module and the ONNX graph in onnxruntime, with the weights given here."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT

import dslc


def run_both(source: str, weights: dict, x: np.ndarray, params: dict | None = None) -> list:
    """(torch output, onnxruntime output) for each model output."""
    spec = dslc.compile_source(source, params=params)
    model = spec.torch_module().eval()
    state = {k: torch.tensor(v, dtype=torch.float32) for k, v in weights.items()}
    model.load_state_dict(state)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
    expected = expected if isinstance(expected, tuple) else (expected,)
    session = ort.InferenceSession(spec.onnx_model(weights=state).SerializeToString())
    got = session.run(None, {spec.graph.inputs[0].name: x})
    return [(e.numpy(), g) for e, g in zip(expected, got, strict=True)]


def test_dense_layer_with_relu():
    """x = [0.5, 0.3], w = [0.8, 0.2], b = 0.1: relu(0.8*0.5 + 0.2*0.3 + 0.1) = 0.56."""
    source = "model Dense { input x: f32[N, 2]  output y = x -> linear(1) -> relu }"
    weights = {"fc1.weight": [[0.8, 0.2]], "fc1.bias": [0.1]}
    x = np.array([[0.5, 0.3], [-1.0, -1.0]], dtype=np.float32)
    for t, o in run_both(source, weights, x):
        np.testing.assert_allclose(t, [[0.56], [0.0]], atol=1e-6)  # the second row is cut by ReLU
        np.testing.assert_allclose(o, [[0.56], [0.0]], atol=1e-6)


def test_max_pooling_2x2_stride_2():
    source = "model Pool { input x: f32[N, 1, 4, 4]  output y = x -> max_pool2d(2, stride=2) }"
    x = np.array([[1, 3, 2, 4], [5, 6, 7, 8], [9, 1, 2, 0], [3, 4, 5, 6]], dtype=np.float32)
    for t, o in run_both(source, {}, x[None, None]):
        np.testing.assert_array_equal(t[0, 0], [[6, 8], [9, 6]])
        np.testing.assert_array_equal(o[0, 0], [[6, 8], [9, 6]])


def test_softmax_and_cross_entropy_by_hand():
    """Logits [2, 1, 0.1]: softmax = e^z / sum e^z; cross-entropy of class 0 = -log p0."""
    z = [2.0, 1.0, 0.1]
    total = math.exp(2.0) + math.exp(1.0) + math.exp(0.1)  # 7.389 + 2.718 + 1.105 = 11.212
    p = [math.exp(v) / total for v in z]  # [0.659, 0.242, 0.099]
    assert p[0] == pytest.approx(0.659, abs=1e-3)

    # softmax_regression.dl with 3 features and W = I, b = 0: the logits are the input itself.
    spec = dslc.load(ROOT / "specs/softmax_regression.dl", params={"features": 3})
    eye = {"fc1.weight": np.eye(3).tolist(), "fc1.bias": [0.0, 0.0, 0.0]}
    x = np.array([z], dtype=np.float32)
    _, (t_probs, o_probs) = run_both(spec.source, eye, x, params={"features": 3})
    np.testing.assert_allclose(t_probs[0], p, atol=1e-6)
    np.testing.assert_allclose(o_probs[0], p, atol=1e-6)

    loss = spec.torch_namespace()["create_loss"]()
    value = loss(torch.tensor([z]), torch.tensor([0]))
    assert value.item() == pytest.approx(-math.log(p[0]), abs=1e-6)  # 0.417
    assert value.item() == pytest.approx(0.417, abs=1e-3)
