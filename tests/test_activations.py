"""The activations and elementwise functions: each op's PyTorch code is the function PyTorch
documents (compared with torch.nn.functional directly, not with our own code), and its ONNX
graph agrees with it across the whole range, where the thresholds and saturations are
(-30 to 30: softplus's linear part, elu's and selu's tails, the clipping ends)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from test_ops_conv import compile_one, run_both

import dslc

X = np.linspace(-30, 30, 4 * 3 * 5 * 7, dtype=np.float32).reshape(4, 3, 5, 7)

# stage -> the PyTorch function it must compute
CASES = {
    "silu": F.silu,
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "relu6": F.relu6,
    "hardtanh(-2.0, 3.0)": lambda x: F.hardtanh(x, -2.0, 3.0),
    "clamp(min=-1.5)": lambda x: torch.clamp(x, min=-1.5),
    "clamp(max=2.5)": lambda x: torch.clamp(x, max=2.5),
    "clamp(min=-1.0, max=1.0)": lambda x: torch.clamp(x, -1.0, 1.0),
    "elu(alpha=0.5)": lambda x: F.elu(x, 0.5),
    "selu": F.selu,
    "softplus": F.softplus,
    "softplus(beta=2.0, threshold=5.0)": lambda x: F.softplus(x, 2.0, 5.0),
    "mish": F.mish,
    "abs": torch.abs,
    "pow(3)": lambda x: torch.pow(x, 3.0),
}


@pytest.mark.parametrize("stage", list(CASES))
def test_activation_is_pytorchs_and_onnx_agrees(stage: str) -> None:
    spec = compile_one(f"x -> {stage}", X.shape)
    torch_out, onnx_out = run_both(spec, X)
    want = CASES[stage](torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(torch_out, want, rtol=0, atol=0)
    np.testing.assert_allclose(onnx_out, want, rtol=1e-6, atol=1e-5)


def test_glu_halves_its_dim() -> None:
    x = X.reshape(2, 6, 5, 7)
    spec = compile_one("x -> glu(dim=1)", x.shape)
    assert spec.graph.outputs["y"].type.shape[1] == 3
    torch_out, onnx_out = run_both(spec, x)
    np.testing.assert_allclose(torch_out, F.glu(torch.from_numpy(x), 1).numpy(), atol=0)
    np.testing.assert_allclose(onnx_out, torch_out, atol=1e-5)  # the suite's parity tolerance


@pytest.mark.parametrize("stage", ["exp", "log", "sqrt"])
def test_exp_log_sqrt(stage: str) -> None:
    x = np.linspace(0.01, 20, 60, dtype=np.float32).reshape(3, 20)
    torch_out, onnx_out = run_both(compile_one(f"x -> {stage}", x.shape), x)
    want = getattr(torch, stage)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(torch_out, want, atol=0)
    np.testing.assert_allclose(onnx_out, want, rtol=1e-6)


def test_minimum_maximum_broadcast() -> None:
    spec = dslc.compile_source(
        "model M { input a: f32[N, 3, 4]  input b: f32[N, 1, 4]\n"
        "  output lo = minimum(a, b)  output hi = maximum(a, b) }"
    )
    assert spec.graph.outputs["lo"].type.shape[1:] == (3, 4)


@pytest.mark.parametrize("per_channel", [False, True])
def test_prelu_learns_its_slope_from_pytorchs_start(per_channel: bool) -> None:
    spec = compile_one(f"x -> prelu(per_channel={str(per_channel).lower()})", X.shape)
    model = spec.torch_module()
    (slope,) = model.parameters()
    assert slope.shape == ((3,) if per_channel else (1,)) and torch.all(slope == 0.25)
    with torch.no_grad():
        slope.copy_(torch.linspace(-0.5, 0.5, slope.numel()))
    onnx_model = spec.onnx_model(weights=model.state_dict())
    import onnxruntime as ort

    got = ort.InferenceSession(onnx_model.SerializeToString()).run(None, {"x": X})[0]
    want = F.prelu(torch.from_numpy(X), slope.detach()).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("clamp", "clamp needs min, max or both"),
        ("clamp(min=2.0, max=1.0)", "min 2.0 is above max 1.0"),
        ("hardtanh(1.0, -1.0)", "min_val 1.0 is above max_val -1.0"),
        ("glu(dim=2)", "must have a known, even size"),
    ],
)
def test_activation_errors(stage: str, message: str) -> None:
    with pytest.raises(dslc.CompileError) as err:
        compile_one(f"x -> {stage}", (2, 3, 5, 7))
    assert message in err.value.diagnostics.items[0].message
