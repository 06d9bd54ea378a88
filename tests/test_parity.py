"""The two backends agree: for every spec, the PyTorch module in eval mode and the ONNX graph
in onnxruntime, with the same weights, give the same outputs (fp32, atol 1e-5) on random
inputs at batch sizes 1, 3 and 7."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import SPECS

import dslc
from dslc.verify import random_inputs


def randomize_batch_norm(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters, so eval-mode batch norm is tested."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.normal_(0.0, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.2, generator=gen)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_torch_and_onnxruntime_agree(path):
    spec = dslc.load(path)
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    randomize_batch_norm(model, torch.Generator().manual_seed(1))
    onnx_model = spec.onnx_model(weights=model.state_dict())
    session = ort.InferenceSession(
        onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(2)
    for batch in (1, 3, 7):
        inputs = random_inputs(spec.graph.inputs, batch, rng)
        with torch.no_grad():
            expected = model(*(torch.from_numpy(a) for a in inputs.values()))
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(list(spec.graph.outputs), inputs)
        for name, e, g in zip(spec.graph.outputs, expected, got, strict=True):
            assert g.shape == tuple(e.shape), f"{name} at batch {batch}"
            np.testing.assert_allclose(
                g, e.numpy(), rtol=0, atol=1e-5, err_msg=f"{name}, batch {batch}"
            )


def test_weights_that_do_not_fit_are_refused():
    spec = dslc.load(SPECS[0])
    state = spec.torch_module().state_dict()
    state.pop(next(iter(state)))
    state["extra.weight"] = torch.zeros(2)
    with pytest.raises(dslc.DslcError, match="(?s)missing .*unexpected 'extra.weight'"):
        spec.onnx_model(weights=state)
