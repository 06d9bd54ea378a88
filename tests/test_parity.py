"""The two backends agree: for every spec, the PyTorch module in eval mode and the ONNX graph
in onnxruntime, with the same weights, give the same outputs (fp32, atol 1e-5) on random
inputs at batch sizes 1, 3 and 7 (and, for a model with a recurrent layer, at sequence
lengths 1, 7 and 64: parity.lengths_for). The ONNX graph as compiled for inference, with batch norm
folded into the layer before it, agrees to atol 1e-4 (folding rounds differently).

The deepest networks (ResNet-50, GoogLeNet, MobileNetV2, EfficientNet-B0) accumulate more
float32 rounding than 1e-5 in PyTorch itself. For them the tolerance is a few times PyTorch's
own float32 error, measured against the same module in float64: onnxruntime must be as close
to the exact result as PyTorch is. For every other spec that rule leaves the tolerance at 1e-5."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import SPECS, params_for

import dslc
from dslc.runtime.parity import lengths_for, random_inputs, roi_inputs


def randomize_batch_norm(model: torch.nn.Module, gen: torch.Generator, inputs=None) -> None:
    """Non-trivial running statistics and affine parameters, so eval-mode batch norm is tested.
    With `inputs`, the running statistics are those of one training-mode pass over them (as
    after training), which keeps activations of deep networks at a realistic scale."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            m.running_mean.normal_(0.0, 0.5, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.normal_(0.0, 0.2, generator=gen)
        if inputs is not None and bns:
            for m in bns:
                m.momentum = 1.0
            model.train()(*inputs)
            for m in bns:
                m.momentum = 0.1
    model.eval()


def session(onnx_model) -> ort.InferenceSession:
    return ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_torch_and_onnxruntime_agree(path):
    spec = dslc.load(path, params_for(path))
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    rng = np.random.default_rng(2)
    tokens, rois = spec.graph.token_inputs(), roi_inputs(spec.graph)
    calibration = random_inputs(spec.graph.inputs, 8, rng, tokens=tokens, rois=rois)
    randomize_batch_norm(
        model, torch.Generator().manual_seed(1), [torch.from_numpy(a) for a in calibration.values()]
    )
    state = model.state_dict()
    plain = session(spec.onnx_model(weights=state, fold_batch_norm=False))
    has_bn = any(n.op.name == "batch_norm" for n in spec.graph.nodes)
    graphs = [(plain, 1e-5)] + ([(session(spec.onnx_model(weights=state)), 1e-4)] if has_bn else [])
    for batch, length in [(b, t) for b in (1, 3, 7) for t in lengths_for(spec.graph)]:
        inputs = random_inputs(spec.graph.inputs, batch, rng, length, tokens=tokens, rois=rois)
        expected = run_torch(model, inputs)
        errors: list[float] = []  # PyTorch's own float32 error at this batch, once measured
        for sess, atol in graphs:
            got = sess.run(list(spec.graph.outputs), inputs)
            for name, e, g in zip(spec.graph.outputs, expected, got, strict=True):
                assert g.shape == e.shape, f"{name} at batch {batch}, length {length}"
                if np.abs(g - e).max(initial=0.0) > atol:  # then it must beat PyTorch's rounding
                    errors = errors or [torch_float32_error(model, inputs)]
                    atol = max(atol, 4 * errors[0])
                np.testing.assert_allclose(
                    g,
                    e,
                    rtol=0,
                    atol=atol,
                    err_msg=f"{name}, batch {batch}, T {length}, atol {atol}",
                )


def torch_float32_error(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> float:
    """How far the module's float32 outputs are from the same module in float64."""
    exact = run_torch(copy.deepcopy(model).double(), inputs)
    return max(
        float(np.abs(e - x).max(initial=0.0))
        for e, x in zip(run_torch(model, inputs), exact, strict=True)
    )


def run_torch(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The module's outputs as float64 arrays; float inputs follow the module's dtype."""
    dtype = next(model.parameters(), torch.zeros(())).dtype
    args = [
        torch.from_numpy(a).to(dtype)
        if a.dtype.kind == "f" and a.dtype.itemsize == 4
        else torch.from_numpy(a)
        for a in inputs.values()
    ]
    with torch.no_grad():
        out = model(*args)
    return [o.double().numpy() for o in (out if isinstance(out, tuple) else (out,))]


def test_folding_removes_every_batch_norm_after_a_conv():
    """ResNet-18: all 20 batch norms follow a convolution, so none is left in the graph."""
    spec = dslc.load("specs/resnet18.dl", {"size": 32})
    nodes = spec.onnx_model().graph.node
    assert not [n for n in nodes if n.op_type == "BatchNormalization"]
    plain = spec.onnx_model(fold_batch_norm=False).graph.node
    assert sum(n.op_type == "BatchNormalization" for n in plain) == 20
    assert len(plain) - len(nodes) == 20


def test_a_batch_norm_whose_input_is_also_used_elsewhere_stays():
    source = """
    model M {
        input x: f32[N, 3, 8, 8]
        h = x -> conv2d(4, 3)
        output a = h -> batch_norm
        output b = h -> relu
    }
    """
    spec = dslc.compile_source(source)
    ops = [n.op_type for n in spec.onnx_model().graph.node]
    assert "BatchNormalization" in ops


def test_weights_that_do_not_fit_are_refused():
    spec = dslc.load(SPECS[0])
    state = spec.torch_module().state_dict()
    state.pop(next(iter(state)))
    state["extra.weight"] = torch.zeros(2)
    with pytest.raises(dslc.DslcError, match="(?s)missing .*unexpected 'extra.weight'"):
        spec.onnx_model(weights=state)


@pytest.mark.parametrize("groups", [1, 2])
def test_batch_norm_folds_into_a_transposed_convolution(groups):
    """Weight (C_in, C_out/groups, k, k): output channels are axis 1, folded when groups is 1."""
    source = f"""
    model M {{
        input x: f32[N, 4, 5, 5]
        output y = x -> conv_transpose2d(6, 3, stride=2, groups={groups}) -> batch_norm
    }}
    """
    spec = dslc.compile_source(source)
    torch.manual_seed(0)
    model = spec.torch_module()
    randomize_batch_norm(model, torch.Generator().manual_seed(1))
    onnx_model = spec.onnx_model(weights=model.state_dict())
    ops = [n.op_type for n in onnx_model.graph.node]
    assert ("BatchNormalization" in ops) == (groups != 1)
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(np.float32)
    (got,) = session(onnx_model).run(None, {"x": x})
    np.testing.assert_allclose(got, run_torch(model, {"x": x})[0], atol=1e-5)
