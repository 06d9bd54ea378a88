"""Fixed-kernel filters: weights written in the spec, frozen (specs/image_filters.dl)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT

import dslc

SPEC = ROOT / "specs/image_filters.dl"


@pytest.fixture(scope="module")
def spec():
    return dslc.load(SPEC)


def run(spec, image: np.ndarray) -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    with torch.no_grad():
        outs = model(torch.from_numpy(image))
    return {k: o.numpy() for k, o in zip(spec.graph.outputs, outs, strict=True)}


def test_the_mean_filter_averages_each_neighbourhood(spec):
    image = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    smooth = run(spec, image)["smooth"]
    padded = np.pad(image, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    np.testing.assert_allclose(smooth, windows.mean(axis=(-1, -2)), atol=1e-6)


def test_sobel_kernels_measure_the_gradients_of_a_ramp(spec):
    """Brightness rising by 1 per column: d/dx is 1 * (1 + 2 + 1) * 2 = 8, d/dy is 0 inside."""
    ramp = np.tile(np.arange(28, dtype=np.float32), (28, 1))[None, None]
    edges = run(spec, ramp)["edges"][0, :, 2:-2, 2:-2]
    np.testing.assert_allclose(edges[0], 8.0, atol=1e-4)
    np.testing.assert_allclose(edges[1], 0.0, atol=1e-4)


def test_frozen_weights_do_not_train(spec):
    ns = spec.torch_namespace()
    torch.manual_seed(0)
    model = ns["create_model"]()
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1.weight", "conv2.weight"}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = ns["create_optimizer"](model)
    image = torch.randn(4, 1, 28, 28)
    loss = ns["create_loss"]()(model(image)[2], torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    after = model.state_dict()
    assert torch.equal(before["conv2.weight"], after["conv2.weight"])
    assert torch.equal(before["conv1.weight"], after["conv1.weight"])
    assert not torch.equal(before["fc1.weight"], after["fc1.weight"])


def test_the_onnx_graph_carries_the_kernels(spec):
    model = spec.onnx_model(seed=123)  # random seed: only the trainable layer is random
    weights = {t.name: t for t in model.graph.initializer}
    sobel = np.frombuffer(weights["conv2.weight"].raw_data, np.float32).reshape(2, 1, 3, 3)
    assert sobel[0, 0].tolist() == [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    ramp = np.tile(np.arange(28, dtype=np.float32), (28, 1))[None, None]
    session = ort.InferenceSession(model.SerializeToString())
    edges = session.run(["edges"], {"image": ramp})[0]
    np.testing.assert_allclose(edges[0, 0, 2:-2, 2:-2], 8.0, atol=1e-4)


def test_summary_counts_frozen_parameters(spec):
    assert "Parameters: 1,017 (990 trainable, 27 frozen)" in spec.summary()


@pytest.mark.parametrize(
    "init, message",
    [
        ("[[1, 2], [3, 4]]", "have shape [2, 2], which does not fit its shape [1, 1, 3, 3]"),
        ("[[1, 2, 3], [4, 5]]", "have rows of different lengths"),
        ("[1, 2, 3]", None),  # broadcasts along the last dim
    ],
)
def test_values_must_fit_the_parameter(init, message):
    source = f"""
    model M {{
        input x: f32[N, 1, 8, 8]
        output y = x -> conv2d(1, 3, bias=false, init={init})
    }}
    """
    if message is None:
        assert dslc.compile_source(source).param_count == 9
        return
    with pytest.raises(dslc.CompileError, match=message.replace("[", r"\[")):
        dslc.compile_source(source)
