"""Learned tensors, `name = parameter(shape, init, trainable)`: an nn.Parameter attribute named
after the assignment (its state_dict key is that name alone), counted like any parameter,
started by its init (in the constructor where torch has a factory for it), frozen by
trainable=false, broadcast in arithmetic, and an initializer in ONNX that agrees with PyTorch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import dslc

SPEC = """
model M {
    input x: f32[N, 3, 2]
    scale = parameter([3, 1], init=0.5)
    shift = parameter([3, 2])
    table = parameter([2], init=[1, 2], trainable=false)
    noise = parameter([3, 2], init="normal_0.02")
    output y = (x * scale + shift) * table + noise
}
"""


@pytest.fixture(scope="module")
def spec() -> dslc.Spec:
    return dslc.compile_source(SPEC)


def test_state_dict_keys_are_the_assigned_names(spec: dslc.Spec) -> None:
    model = spec.torch_module()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {"scale": (3, 1), "shift": (3, 2), "table": (2,), "noise": (3, 2)}
    assert [k for k, _ in spec.graph.parameters()] == ["scale", "shift", "table", "noise"]
    assert spec.param_count == 3 + 6 + 2 + 6 == sum(p.numel() for p in model.parameters())


def test_inits_are_applied(spec: dslc.Spec) -> None:
    torch.manual_seed(0)
    model = spec.torch_module()
    assert torch.equal(model.scale, torch.full((3, 1), 0.5))
    assert torch.equal(model.shift, torch.zeros(3, 2))
    assert torch.equal(model.table, torch.tensor([1.0, 2.0]))
    assert 0 < float(model.noise.detach().std()) < 0.1 and not torch.equal(
        model.noise, torch.zeros(3, 2)
    )


def test_torch_factories_start_the_tensor_in_the_constructor(spec: dslc.Spec) -> None:
    source = spec.torch_source()
    assert "self.scale = nn.Parameter(torch.full((3, 1), 0.5))" in source
    assert "self.shift = nn.Parameter(torch.zeros(3, 2))" in source
    assert "nn.init.normal_(self.noise, std=0.02)" in source
    assert "nn.init.constant_" not in source and "nn.init.zeros_" not in source
    assert "y = x * self.scale" in source  # read in place, not copied to a local first


def test_trainable_false_is_frozen(spec: dslc.Spec) -> None:
    model = spec.torch_module()
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"scale", "shift", "noise"}
    model(torch.randn(4, 3, 2)).sum().backward()
    assert model.table.grad is None and model.scale.grad is not None


def test_broadcasting_and_onnx_parity_with_trained_values(spec: dslc.Spec) -> None:
    model = spec.torch_module().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    onnx_model = spec.onnx_model(weights=model.state_dict())
    names = {i.name for i in onnx_model.graph.initializer}
    assert {"scale", "shift", "table", "noise"} <= names
    session = ort.InferenceSession(
        onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    for batch in (1, 3, 7):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 2)).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x))
        t = {k: v.numpy() for k, v in model.state_dict().items()}
        by_hand = (x * t["scale"] + t["shift"]) * t["table"] + t["noise"]
        np.testing.assert_allclose(want.numpy(), by_hand, atol=1e-6)
        np.testing.assert_allclose(session.run(None, {"x": x})[0], want.numpy(), atol=1e-5)


def test_a_block_parameter_takes_its_shape_from_the_block() -> None:
    spec = dslc.compile_source(
        "block Scale(width: int) { input x  gamma = parameter([width], init=1e-6)\n"
        "  output y = x * gamma }\n"
        "model M { input x: f32[N, 4]  output y = x -> Scale(4) * 2 as scale }"
    )
    source = spec.torch_source()
    assert "self.gamma = nn.Parameter(torch.full((width,), 1e-06))" in source
    model = spec.torch_module()
    assert sorted(model.state_dict()) == ["scale.0.gamma", "scale.1.gamma"]
    x = torch.ones(2, 4)
    assert torch.allclose(model(x), torch.full((2, 4), 1e-12))


def test_an_output_may_be_a_parameter() -> None:
    spec = dslc.compile_source(
        "model M { input x: f32[N, 3]  t = parameter([2, 3], init=[[1, 2, 3], [4, 5, 6]])\n"
        "  output y = x -> linear(3)  output z = t }"
    )
    model = spec.torch_module().eval()
    _, z = model(torch.zeros(1, 3))
    onnx_model = spec.onnx_model(weights=model.state_dict())
    session = ort.InferenceSession(
        onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    got = session.run(["z"], {"x": np.zeros((1, 3), np.float32)})[0]
    np.testing.assert_array_equal(got, z.detach().numpy())
    np.testing.assert_array_equal(got, [[1, 2, 3], [4, 5, 6]])
