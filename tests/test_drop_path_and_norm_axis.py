"""Stochastic depth and layer norm over one chosen axis: drop_path drops whole examples while
training and is the identity in eval and ONNX; layer_norm(axis=1) equals torch's layer norm
over the channels of (N, C, H, W) and agrees with onnxruntime, fused and decomposed."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F  # noqa: N812
from test_ops_conv import compile_one, run_both

import dslc


def test_drop_path_drops_whole_examples_while_training() -> None:
    spec = compile_one("x -> drop_path(0.5)", (64, 3, 4))
    model = spec.torch_module().train()
    torch.manual_seed(0)
    out = model(torch.ones(64, 3, 4))
    per_example = out.reshape(64, -1)
    kept = per_example[:, 0] != 0
    assert torch.all(per_example[kept] == 2.0) and torch.all(per_example[~kept] == 0.0)
    assert 16 < int(kept.sum()) < 48  # about half kept
    model.eval()
    x = torch.randn(5, 3, 4)
    assert torch.equal(model(x), x)


def test_drop_path_is_the_identity_in_onnx() -> None:
    x = np.random.default_rng(0).standard_normal((3, 2, 5)).astype(np.float32)
    torch_out, onnx_out = run_both(compile_one("x -> drop_path(0.2)", x.shape), x)
    assert np.array_equal(torch_out, x) and np.array_equal(onnx_out, x)


def test_a_block_passes_its_drop_rate_to_forward() -> None:
    """The rate is the block's parameter, kept on the module: instances may differ."""
    spec = dslc.compile_source(
        "block B(p: float) { input x  output y = x + (x -> linear(4) -> drop_path(p)) }\n"
        "model M { input x: f32[N, 4]  output y = x -> B(0.1) -> B(0.3) }"
    )
    model = spec.torch_module()
    assert [m.p for m in model.children()] == [0.1, 0.3]
    assert "drop_path(y, self.p, self.training)" in spec.torch_source()


def test_layer_norm_over_the_channels() -> None:
    x = np.random.default_rng(1).standard_normal((2, 6, 3, 4)).astype(np.float32)
    spec = compile_one("x -> layer_norm(axis=1, eps=1e-6)", x.shape)
    torch_out, onnx_out = run_both(spec, x)
    t = torch.from_numpy(x)
    want = F.layer_norm(t.permute(0, 2, 3, 1), (6,), eps=1e-6).permute(0, 3, 1, 2).numpy()
    np.testing.assert_allclose(torch_out, want, atol=1e-6)
    np.testing.assert_allclose(onnx_out, want, atol=1e-5)
    model = spec.torch_module()
    decomposed = spec.onnx_model(weights=model.state_dict(), fused=False)
    got = ort.InferenceSession(decomposed.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_channels_first_layer_norm_in_a_named_sequence_normalizes_the_channels():
    """In an nn.Sequential the norm is called as a module: it must move the axis itself (as
    ConvNeXt's downsampling layers, torchvision's LayerNorm2d), not normalize the last dim."""
    source = """
    model M {
        input x: f32[N, 4, 5, 6]
        output y = x -> (layer_norm(eps=1e-6, axis=1) -> conv2d(3, 1)) as down
    }
    """
    torch.manual_seed(0)
    model = dslc.compile_source(source).torch_module().eval()
    norm, conv = model.down[0], model.down[1]
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
        x = torch.randn(2, 4, 5, 6)
        want = F.layer_norm(x.permute(0, 2, 3, 1), (4,), norm.weight, norm.bias, 1e-6)
        want = conv(want.permute(0, 3, 1, 2))
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=0)
