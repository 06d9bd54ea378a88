"""Initializers: the generated module's nn.init calls and the ONNX backend's NumPy samples draw
from the distribution each scheme names; "default" is PyTorch's own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from onnx import numpy_helper

import dslc

FAN_IN, FAN_OUT = 400, 300


def weights(init: str) -> tuple[np.ndarray, np.ndarray]:
    """fc1.weight (300 x 400) from the PyTorch module and from the ONNX graph."""
    spec = dslc.compile_source(
        f"model M {{ input x: f32[N, {FAN_IN}]  output y = x -> linear({FAN_OUT}, init={init}) }}"
    )
    torch.manual_seed(0)
    w_torch = spec.torch_module().fc1.weight.detach().numpy()
    inits = {t.name: numpy_helper.to_array(t) for t in spec.onnx_model(seed=0).graph.initializer}
    return w_torch, inits["fc1.weight"]


@pytest.mark.parametrize(
    ("init", "std"),
    [
        ('"default"', 1 / math.sqrt(3 * FAN_IN)),  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        ('"he_uniform"', math.sqrt(2 / FAN_IN)),
        ('"he_normal"', math.sqrt(2 / FAN_IN)),
        ('"xavier_uniform"', math.sqrt(2 / (FAN_IN + FAN_OUT))),
        ('"xavier_normal"', math.sqrt(2 / (FAN_IN + FAN_OUT))),
    ],
)
def test_random_schemes_have_the_right_spread(init, std):
    for w in weights(init):
        assert abs(w.mean()) < 0.02 * std  # 120,000 draws: the mean is within 0.003 std
        assert w.std() == pytest.approx(std, rel=0.02)


def test_uniform_schemes_stay_in_their_bounds():
    for init, bound in (
        ('"default"', 1 / math.sqrt(FAN_IN)),
        ('"he_uniform"', math.sqrt(6 / FAN_IN)),
    ):
        for w in weights(init):
            assert np.abs(w).max() <= bound
            assert np.abs(w).max() > 0.99 * bound


@pytest.mark.parametrize(("init", "value"), [('"zeros"', 0.0), ('"ones"', 1.0), ("0.25", 0.25)])
def test_constant_schemes(init, value):
    for w in weights(init):
        assert np.all(w == value)


def test_default_is_exactly_pytorchs_own():
    """With init="default" the generated module emits no nn.init call: the weights are the ones
    nn.Linear draws itself for the same seed."""
    spec = dslc.compile_source("model M { input x: f32[N, 8]  output y = x -> linear(4) }")
    assert "nn.init" not in spec.torch_source()
    torch.manual_seed(3)
    ours = spec.torch_module().fc1.weight
    torch.manual_seed(3)
    theirs = torch.nn.Linear(8, 4).weight
    assert torch.equal(ours, theirs)
