"""Reductions and shape ops: each computes what its PyTorch counterpart does (compared with
torch itself) and its ONNX graph agrees; masked_mean against the mean written out in NumPy,
padding rows included."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_ops_conv import compile_one, run_both

import dslc

X = np.random.default_rng(0).standard_normal((3, 4, 5, 6)).astype(np.float32)

CASES = {
    "mean(axis=1)": lambda x: x.mean(dim=1),
    "sum(axis=[1, 3], keepdim=true)": lambda x: x.sum(dim=(1, 3), keepdim=True),
    "max(axis=-1)": lambda x: x.amax(dim=-1),
    "min(axis=[2, 3])": lambda x: x.amin(dim=(2, 3)),
    "global_max_pool": lambda x: x.amax(dim=(2, 3)),
    "unsqueeze(0)": lambda x: x.unsqueeze(0),
    "sum(axis=1, keepdim=true) -> squeeze(1)": lambda x: x.sum(dim=1),
}


@pytest.mark.parametrize("stage", list(CASES))
def test_reduction_is_pytorchs_and_onnx_agrees(stage: str) -> None:
    torch_out, onnx_out = run_both(compile_one(f"x -> {stage}", X.shape), X)
    want = CASES[stage](torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(torch_out, want, atol=0)
    np.testing.assert_allclose(onnx_out, want, atol=1e-5)


def test_argmax_and_cast() -> None:
    spec = dslc.compile_source(
        "model M { input x: f32[N, 7]\n"
        '  output i = x -> argmax(axis=1)  output c = x -> cast("i64") }'
    )
    assert str(spec.graph.outputs["i"].type) == "i64[N]"
    model = spec.torch_module()
    x = np.array([[0.5, 3.0, 3.0, -1.0, 2.9, 0.0, 1.5]], np.float32)
    i, c = model(torch.from_numpy(x))
    session = ort.InferenceSession(spec.onnx_model().SerializeToString())
    oi, oc = session.run(None, {"x": x})
    assert i.tolist() == oi.tolist() == [1]  # the first of two equal maxima, in both
    assert c.tolist() == oc.tolist() == [[0, 3, 3, -1, 2, 0, 1]]


def test_masked_mean_averages_the_kept_positions_only() -> None:
    spec = dslc.compile_source(
        "model M { input x: f32[N, T, 3]  input m: bool[N, T]\n"
        "  output y = masked_mean(x, m, axis=1) }"
    )
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 3)).astype(np.float32)
    m = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    want = np.stack([x[i][m[i]].mean(0) if m[i].any() else np.zeros(3) for i in range(3)])
    got = spec.torch_module()(torch.from_numpy(x), torch.from_numpy(m)).detach().numpy()
    onnx = ort.InferenceSession(spec.onnx_model().SerializeToString())
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(onnx.run(None, {"x": x, "m": m})[0], want, atol=1e-6)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("x -> squeeze(1)", "has size 4, not 1"),
        ("x -> mean(axis=[1, -3])", "names a dim twice"),
        ("x -> sum(axis=4)", "out of range"),
        ('x -> cast("f8")', "must be one of"),
    ],
)
def test_reduction_errors(body: str, message: str) -> None:
    with pytest.raises(dslc.CompileError) as err:
        compile_one(body, X.shape)
    assert message in err.value.diagnostics.items[0].message
