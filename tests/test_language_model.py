"""Sequence models (issue 5): a GPT written in .dl. The causal mask is really causal in both
backends, the tied output head is one tensor in PyTorch and one initializer in ONNX, parameter
counts match GPT-2's, and the ONNX graph (fused ops or decomposed) has dynamic batch and
sequence axes and agrees with the PyTorch module at T = 1, 7 and 64, batch 1 and 3."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT

import dslc

TINY = ROOT / "specs/tiny_gpt.dl"
GPT2 = ROOT / "specs/gpt2_small.dl"
FUSED_OPS = {"Attention", "LayerNormalization", "Gelu"}


def session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tiny():
    spec = dslc.load(TINY)
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    state = model.state_dict()
    graphs = {fused: session(spec.onnx_model(weights=state, fused=fused)) for fused in (1, 0)}
    return spec, model, graphs


def run_torch(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(tokens)).numpy()


def test_gpt2_small_has_gpt2s_parameter_count():
    spec = dslc.load(GPT2)
    assert spec.param_count == 124_439_808
    module = spec.torch_module()
    assert sum(p.numel() for p in module.parameters()) == 124_439_808  # the tied matrix once


def test_tied_head_is_one_tensor_and_one_initializer(tiny):
    spec, model, _ = tiny
    assert model.fc1.weight is model.embed1.weight
    state = model.state_dict()
    assert state["fc1.weight"].data_ptr() == state["embed1.weight"].data_ptr()
    onnx_model = spec.onnx_model(weights=state)
    names = [t.name for t in onnx_model.graph.initializer]
    assert "embed1.weight" in names and "fc1.weight" not in names
    params = dict(spec.graph.parameters())
    stored = sum(int(np.prod(t.dims)) for t in onnx_model.graph.initializer if t.name in params)
    assert stored == spec.param_count == sum(p.numel() for p in model.parameters())
    # Training changes the one matrix for both uses.
    with torch.no_grad():
        model.embed1.weight[3, 5] += 1.0
    assert model.fc1.weight[3, 5] == model.embed1.weight[3, 5]
    with torch.no_grad():
        model.embed1.weight[3, 5] -= 1.0


def test_onnx_has_dynamic_batch_and_sequence_axes(tiny):
    spec, _, _ = tiny
    graph = spec.onnx_model().graph
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "T"]
    out = [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    assert out == ["N", "T", 256]


def test_fused_and_decomposed_graphs_use_the_ops_they_say(tiny):
    spec, _, _ = tiny
    fused = spec.onnx_model()
    decomposed = spec.onnx_model(fused=False)
    assert FUSED_OPS <= {n.op_type for n in fused.graph.node}
    assert not FUSED_OPS & {n.op_type for n in decomposed.graph.node}
    assert fused.opset_import[0].version == 23 and fused.ir_version == 11
    assert decomposed.opset_import[0].version == 21 and decomposed.ir_version == 10


@pytest.mark.parametrize("fused", [1, 0], ids=["fused", "decomposed"])
def test_tiny_gpt_parity(tiny, fused):
    spec, model, graphs = tiny
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        for length in (1, 7, 64):
            tokens = rng.integers(0, 256, (batch, length))
            expected = run_torch(model, tokens)
            (got,) = graphs[fused].run(None, {"tokens": tokens})
            assert got.shape == (batch, length, 256)
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_gpt2_small_parity():
    """The 12-layer, 124M-parameter model itself, fused and decomposed."""
    spec = dslc.load(GPT2)
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    state = model.state_dict()
    rng = np.random.default_rng(0)
    cases = [(b, t, rng.integers(0, 50257, (b, t))) for b in (1, 3) for t in (1, 7, 64)]
    expected = [run_torch(model, tokens) for _, _, tokens in cases]
    for fused in (True, False):
        graph = session(spec.onnx_model(weights=state, fused=fused))
        for (batch, length, tokens), e in zip(cases, expected, strict=True):
            (got,) = graph.run(None, {"tokens": tokens})
            assert got.shape == (batch, length, 50257)
            np.testing.assert_allclose(
                got, e, rtol=0, atol=1e-4, err_msg=f"fused={fused} batch {batch} T {length}"
            )


@pytest.mark.parametrize("backend", ["torch", "fused", "decomposed"])
def test_causal_mask_is_causal(tiny, backend):
    """Changing the tokens from position k on never changes an output before k, and does
    change the outputs from k on."""
    spec, model, graphs = tiny
    rng = np.random.default_rng(1)

    def run(tokens):
        if backend == "torch":
            return run_torch(model, tokens)
        return graphs[backend == "fused"].run(None, {"tokens": tokens})[0]

    tokens = rng.integers(0, 256, (2, 20))
    before = run(tokens)
    for k in (0, 1, 10, 19):
        changed = tokens.copy()
        changed[:, k:] = (changed[:, k:] + 1 + rng.integers(0, 254, changed[:, k:].shape)) % 256
        after = run(changed)
        np.testing.assert_array_equal(after[:, :k], before[:, :k])
        assert np.abs(after[:, k:] - before[:, k:]).min(axis=-1).max() > 0


def test_padding_mask_hides_padding_in_both_backends():
    """sequence_tagger: what sits at padded positions never reaches the real tokens' outputs."""
    spec = dslc.load(ROOT / "specs/sequence_tagger.dl")
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    graphs = [session(spec.onnx_model(weights=model.state_dict(), fused=f)) for f in (1, 0)]
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 1000, (2, 12))
    mask = np.ones((2, 12), bool)
    mask[0, 8:] = mask[1, 5:] = False
    other = np.where(mask, tokens, rng.integers(0, 1000, tokens.shape))

    def outputs(tokens):
        with torch.no_grad():  # not around a yield: two generators would leak no-grad mode
            expected = model(torch.from_numpy(tokens), torch.from_numpy(mask)).numpy()
        return [expected] + [g.run(None, {"tokens": tokens, "mask": mask})[0] for g in graphs]

    for a, b in zip(outputs(tokens), outputs(other), strict=True):
        np.testing.assert_allclose(a[mask], b[mask], rtol=0, atol=1e-6)
        assert np.abs(a[~mask] - b[~mask]).max() > 1e-3  # the padded positions did change


def test_positions_beyond_the_table_are_refused_at_run_time(tiny):
    spec, model, graphs = tiny
    tokens = np.zeros((1, 65), np.int64)  # the table has 64 rows
    with pytest.raises(ValueError, match="65 positions, but the table has 64"):
        run_torch(model, tokens)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.Fail):  # the table does not broadcast
        graphs[1].run(None, {"tokens": tokens})


def test_language_model_loss_is_mean_next_token_cross_entropy(tiny):
    spec, model, _ = tiny
    ns = spec.torch_namespace()
    logits = torch.randn(3, 7, 256)
    target = torch.randint(0, 256, (3, 7))
    flat = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), target.reshape(-1))
    torch.testing.assert_close(ns["create_loss"]()(logits, target), flat)


def test_sinusoidal_table_is_the_transformers():
    from dslc.ops.embedding import sinusoids

    table = sinusoids(50, 16)
    pos, i = 7, 3
    assert table[pos, 2 * i] == pytest.approx(np.sin(pos / 10000 ** (2 * i / 16)), abs=1e-7)
    assert table[pos, 2 * i + 1] == pytest.approx(np.cos(pos / 10000 ** (2 * i / 16)), abs=1e-7)


def test_compile_decompose_flag_writes_the_basic_ops(tmp_path):
    import onnx

    from dslc.cli import main

    fused, plain = tmp_path / "fused.onnx", tmp_path / "plain.onnx"
    assert main(["compile", str(TINY), "--target", "onnx", "-o", str(fused)]) == 0
    assert main(["compile", str(TINY), "--target", "onnx", "--decompose", "-o", str(plain)]) == 0
    ops = {p: {n.op_type for n in onnx.load(p).graph.node} for p in (fused, plain)}
    assert "Attention" in ops[fused] and not FUSED_OPS & ops[plain]
    assert onnx.load(plain).opset_import[0].version == 21
