"""Attention from parts (dslc/ops/tensor.py, dslc/ops/attention_parts.py): the two attention
specs agree across PyTorch and onnxruntime, fused and decomposed, at short and long sequences;
causal attention really is causal; the shape rules refuse what they should, with messages that
say what is wrong."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT

import dslc
from dslc.runtime.parity import random_inputs

ATTENTION_SPECS = ["tiny_gpt_by_hand", "sdpa_block"]
ATOL = 1e-4


def session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def compiled(name: str):
    """The spec, its PyTorch module in eval mode, and its fused and decomposed ONNX sessions."""
    spec = dslc.load(ROOT / "specs" / f"{name}.dl")
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    state = model.state_dict()
    fused = session(spec.onnx_model(weights=state))
    plain = session(spec.onnx_model(weights=state, fused=False))
    return spec, model, {"fused": fused, "decomposed": plain}


def run_torch(model, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(*(torch.from_numpy(a) for a in inputs.values())).numpy()


@pytest.mark.parametrize("name", ATTENTION_SPECS)
def test_backends_agree_fused_and_decomposed(name):
    spec, model, sessions = compiled(name)
    rng = np.random.default_rng(0)
    for t in (1, 7, 64):
        for batch in (1, 3):
            inputs = random_inputs(
                spec.graph.inputs, batch, rng, other_dims=t, tokens=spec.graph.token_inputs()
            )
            expected = run_torch(model, inputs)
            for kind, sess in sessions.items():
                (got,) = sess.run(None, inputs)
                np.testing.assert_allclose(
                    got, expected, rtol=0, atol=ATOL, err_msg=f"{kind}, T={t}, batch={batch}"
                )


def test_decomposed_graph_has_no_attention_op():
    spec = dslc.load(ROOT / "specs/sdpa_block.dl")
    fused = [n.op_type for n in spec.onnx_model().graph.node]
    plain = [n.op_type for n in spec.onnx_model(fused=False).graph.node]
    assert "Attention" in fused and "Attention" not in plain
    assert {"Softmax", "Trilu", "Where"} <= set(plain)


@pytest.mark.parametrize("name", ATTENTION_SPECS)
def test_a_later_position_does_not_change_earlier_outputs(name):
    """Causal masking (causal_mask by hand, causal=true in sdpa): outputs at positions before
    t ignore every input from t on, in PyTorch and in both ONNX graphs."""
    spec, model, sessions = compiled(name)
    rng = np.random.default_rng(1)
    t = 5
    tokens = spec.graph.token_inputs()
    ((name, x),) = random_inputs(spec.graph.inputs, 2, rng, other_dims=9, tokens=tokens).items()
    changed = x.copy()
    if name in tokens:  # a different token at every later position
        changed[:, t:] = (x[:, t:] + rng.integers(1, tokens[name], x[:, t:].shape)) % tokens[name]
    else:
        changed[:, t:] = rng.standard_normal(changed[:, t:].shape)
    runs = {"torch": lambda a: run_torch(model, {name: a})}
    runs |= {kind: (lambda a, s=s: s.run(None, {name: a})[0]) for kind, s in sessions.items()}
    for kind, run in runs.items():
        before, after = run(x), run(changed)
        np.testing.assert_allclose(after[:, :t], before[:, :t], atol=1e-6, err_msg=kind)
        assert np.abs(after[:, t:] - before[:, t:]).max() > 1e-3, f"{kind}: input ignored"


def test_causal_mask_sets_the_upper_triangle_to_minus_infinity():
    """The 3 queries are the last of the 5 positions (as in a decoder's step after 2 cached
    ones): query i sees keys 0 .. i + 2."""
    spec = dslc.compile_source("model M { input s: f32[N, 2, T, S]  output y = s -> causal_mask }")
    s = np.random.default_rng(2).standard_normal((1, 2, 3, 5)).astype(np.float32)
    upper = np.triu(np.ones((3, 5), dtype=bool), 1 + 5 - 3)
    expected = np.where(upper, -np.inf, s)
    (got,) = session(spec.onnx_model()).run(None, {"s": s})
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(run_torch(spec.torch_module(), {"s": s}), expected)


MASKED = """
model M {
    input q: f32[N, 2, T, 8]
    input k: f32[N, 2, S, 8]
    input v: f32[N, 2, S, 4]
    input mask: bool[MASK_SHAPE]
    output y = scaled_dot_product_attention(q, k, v, mask, causal=CAUSAL, scale=0.5)
}
"""


@pytest.mark.parametrize("causal", ["true", "false"])
@pytest.mark.parametrize("mask_shape", ["T, S", "N, 1, 1, S", "1, S"])
def test_sdpa_with_a_mask(mask_shape, causal):
    """A bool mask (true = attend), broadcast, with or without causal: PyTorch refuses both at
    once, so dslc ands a lower-triangular mask in; onnxruntime's Attention needs the mask's last
    two dims unbroadcast, so dslc expands it. The 4 queries are the last of the 6 positions."""
    source = MASKED.replace("MASK_SHAPE", mask_shape).replace("CAUSAL", causal)
    spec = dslc.compile_source(source)
    rng = np.random.default_rng(3)
    n, t, s = 3, 4, 6
    sizes = {"N": n, "T": t, "S": s, "1": 1}
    inputs = {
        name: rng.standard_normal(shape).astype(np.float32)
        for name, shape in (("q", (n, 2, t, 8)), ("k", (n, 2, s, 8)), ("v", (n, 2, s, 4)))
    }
    mask = rng.random([sizes[d.strip()] for d in mask_shape.split(",")]) > 0.4
    mask[..., 0] = True  # every query attends to something, so no row is all -inf
    inputs["mask"] = mask
    expected = run_torch(spec.torch_module(), inputs)
    for fused in (True, False):
        (got,) = session(spec.onnx_model(fused=fused)).run(None, inputs)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f"fused={fused}")


def out_type(expr: str, *inputs: str) -> str:
    decls = " ".join(f"input {i}" for i in inputs)
    spec = dslc.compile_source(f"model M {{ {decls}  output y = {expr} }}")
    return str(spec.graph.outputs["y"].type)


def test_shape_rules():
    x = "x: f32[N, T, 4, 6]"
    assert out_type("x -> transpose(1, -1)", x) == "f32[N, 6, 4, T]"
    assert out_type("x -> permute([0, 2, 1, 3])", x) == "f32[N, 4, T, 6]"
    assert out_type("matmul(a, b)", "a: f32[N, 1, T, 8]", "b: f32[3, 8, S]") == "f32[N, 3, T, S]"
    q, k, v = "q: f32[N, 4, T, 8]", "k: f32[N, 4, S, 8]", "v: f32[N, 4, S, 2]"
    assert out_type("scaled_dot_product_attention(q, k, v)", q, k, v) == "f32[N, 4, T, 2]"
    spec = dslc.compile_source(
        "model M { input x: f32[N, 10]  a, b = x -> split([3, 7])  output a  output b }"
    )
    assert [str(v.type) for v in spec.graph.outputs.values()] == ["f32[N, 3]", "f32[N, 7]"]


@pytest.mark.parametrize(
    ("expr", "inputs", "message"),
    [
        (
            "x -> split(5)",
            ["x: f32[N, 12]"],
            "split: dim 1 of f32[N, 12] has size 12, which does not divide into 5 equal parts",
        ),
        (
            "x -> split([4, 4])",
            ["x: f32[N, 12]"],
            "split: sizes [4, 4] sum to 8 but dim 1 of f32[N, 12] has size 12",
        ),
        (
            "x -> split(2, axis=1)",
            ["x: f32[N, T, 12]"],
            "split: dim 1 of f32[N, T, 12] is the symbolic T; equal parts need a known size",
        ),
        (
            "matmul(a, b)",
            ["a: f32[N, T, 8]", "b: f32[N, 6, S]"],
            "matmul: inner dims differ: the first input f32[N, T, 8] has 8 columns but the "
            "second f32[N, 6, S] has 6 rows",
        ),
        (
            "matmul(a, b)",
            ["a: f32[N, T, 8]", "b: f32[N, T, S]"],
            "the first input f32[N, T, 8] has 8 columns but the second f32[N, T, S] has T rows",
        ),
        ("matmul(a, b)", ["a: f32[N, 8]", "b: f32[8]"], "the second input f32[8] has rank 1"),
        (
            "matmul(a, b)",
            ["a: f32[2, T, 8]", "b: f32[3, 8, S]"],
            "matmul: the leading dims of f32[2, T, 8] and f32[3, 8, S] do not broadcast (2 vs 3)",
        ),
        (
            "x -> permute([0, 1])",
            ["x: f32[N, T, 4]"],
            "permute: dims [0, 1] has 2 entries but the input f32[N, T, 4] has rank 3",
        ),
        (
            "x -> permute([0, 2, -1])",
            ["x: f32[N, T, 4]"],
            "not a permutation: dim 2 appears twice",
        ),
        ("x -> transpose(0, 3)", ["x: f32[N, T, 4]"], "transpose: axis 3 is out of range"),
        ("x -> causal_mask", ["x: f32[N]"], "causal_mask expects scores (..., T, S)"),
        (
            "scaled_dot_product_attention(q, k, v)",
            ["q: f32[N, 4, T, 8]", "k: f32[N, 4, S, 6]", "v: f32[N, 4, S, 8]"],
            "must agree in head size",
        ),
        (
            "scaled_dot_product_attention(q, k, v)",
            ["q: f32[N, 4, T, 8]", "k: f32[N, 4, S, 8]", "v: f32[N, 4, T, 8]"],
            "must agree in batch, heads and keys",
        ),
        (
            "scaled_dot_product_attention(q, k, v)",
            ["q: f32[N, T, 8]", "k: f32[N, T, 8]", "v: f32[N, T, 8]"],
            "q must be f32 (N, H, L, E) with heads split",
        ),
        (
            "scaled_dot_product_attention(q, k, v, m)",
            [
                "q: f32[N, 4, T, 8]",
                "k: f32[N, 4, S, 8]",
                "v: f32[N, 4, S, 8]",
                "m: bool[N, 3, T, S]",
            ],
            "mask bool[N, 3, T, S] does not broadcast to (N, H, T, S) = (N, 4, T, S)",
        ),
        (
            "scaled_dot_product_attention(q, k, v, m)",
            ["q: f32[N, 4, T, 8]", "k: f32[N, 4, S, 8]", "v: f32[N, 4, S, 8]", "m: f32[T, S]"],
            "mask must be bool",
        ),
        (
            "scaled_dot_product_attention(q, k, v, m)",
            ["q: f32[N, 4, T, 8]", "k: f32[N, 4, S, 8]", "v: f32[N, 4, S, 8]", "m: bool[S]"],
            "mask must be bool of rank 2 to 4",
        ),
    ],
)
def test_shape_errors(expr, inputs, message):
    with pytest.raises(dslc.CompileError, match=re.escape(message)):
        out_type(expr, *inputs)


def test_attention_by_hand_computes_the_attention_op():
    """tiny_gpt_by_hand (heads by hand) and tiny_gpt (the attention op) at the same sizes, with
    the same weights under their own names, give the same logits."""
    hand = dslc.load(ROOT / "specs/tiny_gpt_by_hand.dl")
    params = {"width": 32, "heads": 2, "layers": 2, "context": 64}
    op = dslc.load(ROOT / "specs/tiny_gpt.dl", params)
    torch.manual_seed(0)
    by_hand = hand.torch_module().eval()
    one_op = op.torch_module().eval()
    renames = {
        "self_attention1.fc1": "attn1.qkv",
        "self_attention1.y": "attn1.proj",
        "self_attention1.fc2": "attn1.proj",
        "mlp1.fc1": "fc1",
        "mlp1.fc2": "fc2",
    }
    state = {}
    for key, value in by_hand.state_dict().items():
        for old, new in renames.items():
            key = key.replace(old, new)
        state[key] = value
    one_op.load_state_dict(state)
    tokens = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (3, 20)))
    with torch.no_grad():
        torch.testing.assert_close(one_op(tokens), by_hand(tokens), rtol=0, atol=1e-5)


def test_a_query_that_sees_no_key_gets_zeros_in_every_backend():
    """Batch 0 hides key 0, which is all its first (causal) query may see; batch 1 hides every
    key. PyTorch gives those queries zeros; both ONNX graphs must too (softmax alone: NaN)."""
    src = (
        "model M { input q: f32[N, 2, T, 4]  input k: f32[N, 2, T, 4]  input v: f32[N, 2, T, 4]"
        "  input m: bool[N, 1, 1, T]"
        "  output y = scaled_dot_product_attention(q, k, v, m, causal=true) }"
    )
    spec = dslc.compile_source(src)
    model = spec.torch_module().eval()
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 2, 5, 4)).astype(np.float32) for _ in range(3))
    mask = np.ones((2, 1, 1, 5), bool)
    mask[0, ..., 0] = False
    mask[1] = False
    feeds = {"q": q, "k": k, "v": v, "m": mask}
    expected = run_torch(model, feeds)
    assert not np.isnan(expected).any() and (expected[1] == 0).all()
    for fused in (True, False):
        (got,) = session(spec.onnx_model(weights={}, fused=fused)).run(None, feeds)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=f"fused={fused}")


def test_causal_sdpa_with_fewer_queries_than_keys():
    """causal=true, 4 queries that are the last of 6 positions (a decoder's step): query i sees
    keys 0 .. i + 2, in PyTorch (causal_lower_right) and onnxruntime (fused and decomposed),
    against softmax(q k^T / sqrt(8)) v written out in NumPy."""
    spec = dslc.compile_source(
        "model M { input q: f32[N, 2, T, 8]  input k: f32[N, 2, S, 8]  input v: f32[N, 2, S, 4]"
        "  output y = scaled_dot_product_attention(q, k, v, causal=true) }"
    )
    rng = np.random.default_rng(4)
    q, k, v = (
        rng.standard_normal((3, 2, n, e)).astype(np.float32) for n, e in ((4, 8), (6, 8), (6, 4))
    )
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(8)
    scores[..., np.triu(np.ones((4, 6), bool), 3)] = -np.inf
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    expected = (weights / weights.sum(-1, keepdims=True)) @ v
    inputs = {"q": q, "k": k, "v": v}
    np.testing.assert_allclose(run_torch(spec.torch_module(), inputs), expected, atol=1e-5)
    for fused in (True, False):
        (got,) = session(spec.onnx_model(fused=fused)).run(None, inputs)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f"fused={fused}")
