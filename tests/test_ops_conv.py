"""The convolutional-family ops (adaptive pooling, transposed convolution, group and instance
norm, upsampling, padding, local response norm, identity): their shape rules and both
backends against PyTorch's own functions, over grids of sizes, including the awkward cases
(sizes that do not divide, outputs larger than inputs)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

import dslc
from dslc.ops.pool import adaptive_windows


def compile_one(body: str, shape: tuple[int, ...]) -> dslc.Spec:
    dims = ", ".join(map(str, shape))
    return dslc.compile_source(f"model M {{ input x: f32[{dims}]  output y = {body} }}")


def run_both(spec: dslc.Spec, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The generated PyTorch module (eval, seed 0) and onnxruntime on the same input."""
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    onnx_model = spec.onnx_model(weights=model.state_dict())
    session = ort.InferenceSession(
        onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return expected, session.run(None, {"x": x})[0]


def random(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def check_against(body: str, x: np.ndarray, reference: torch.Tensor) -> None:
    """The op's declared type, its PyTorch code and its ONNX graph all equal `reference`."""
    spec = compile_one(body, x.shape)
    declared = tuple(spec.graph.outputs["y"].type.shape)
    assert declared == tuple(reference.shape), f"{body}: shape rule says {declared}"
    got_torch, got_onnx = run_both(spec, x)
    np.testing.assert_allclose(got_torch, reference.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_onnx, reference.numpy(), rtol=0, atol=1e-5)


# ---- adaptive average pooling


def test_adaptive_windows_follow_pytorch_rule():
    # 49 frames into 4: ceil/floor bounds make neighbouring windows share a frame
    assert adaptive_windows(49, 4) == [(0, 13), (12, 25), (24, 37), (36, 49)]
    # more outputs than inputs: windows repeat elements
    assert adaptive_windows(2, 5) == [(0, 1), (0, 1), (0, 2), (1, 2), (1, 2)]


@pytest.mark.parametrize(
    ("shape", "out"),
    [
        ((2, 3, 10), (5,)),  # divides: AveragePool
        ((2, 3, 10), (3,)),  # does not divide
        ((2, 3, 4), (7,)),  # larger than the input
        ((2, 3, 13, 9), (7, 4)),
        ((2, 3, 14, 14), (7, 7)),
        ((1, 2, 5, 6), (1, 1)),  # GlobalAveragePool
        ((1, 2, 3, 3), (6, 2)),
        ((2, 2, 5, 6, 7), (2, 3, 9)),
        ((1, 2, 4, 4, 4), (2, 2, 2)),
        ((2, 3, 6, 6), (6, 6)),  # already that size: no node
    ],
)
def test_adaptive_avg_pool_matches_pytorch(shape, out):
    n = len(out)
    x = random(shape)
    fn = getattr(F, f"adaptive_avg_pool{n}d")
    check_against(f"x -> adaptive_avg_pool{n}d({list(out)})", x, fn(torch.from_numpy(x), out))


def test_adaptive_avg_pool_to_one_takes_symbolic_sizes():
    spec = dslc.compile_source(
        "model M { input x: f32[N, 3, H, W]  output y = x -> adaptive_avg_pool2d(1) }"
    )
    assert str(spec.graph.outputs["y"].type) == "f32[N, 3, 1, 1]"


def test_adaptive_avg_pool_needs_known_sizes_otherwise():
    with pytest.raises(dslc.CompileError, match="adaptive_avg_pool2d to 7 needs known spatial"):
        dslc.compile_source(
            "model M { input x: f32[N, 3, H, W]  output y = x -> adaptive_avg_pool2d(7) }"
        )


def test_adaptive_avg_pool_output_size_per_dim():
    with pytest.raises(dslc.CompileError, match="output_size has 2 values but the input has 3"):
        compile_one("x -> adaptive_avg_pool3d([2, 2])", (1, 1, 4, 4, 4))


def test_alexnet_at_full_size_has_torchvisions_parameter_count():
    params = {"size": 224, "width": 64, "hidden": 4096, "classes": 1000}
    spec = dslc.load(ROOT / "specs/alexnet.dl", params=params)
    assert spec.param_count == 61_100_840  # torchvision.models.alexnet()
    (pool,) = [n for n in spec.graph.nodes if n.op.name == "adaptive_avg_pool2d"]
    assert str(pool.inputs[0].type) == "f32[N, 256, 6, 6]"  # already 6x6 at 224: a no-op
    assert str(pool.output.type) == "f32[N, 256, 6, 6]"
