"""cross_attention (dslc/ops/cross_attention.py): queries from one sequence, keys and values from
another. The generated CrossAttention module computes what nn.MultiheadAttention (kdim/vdim)
and F.scaled_dot_product_attention compute with the same weights, with and without a padding
mask; PyTorch and onnxruntime (fused Attention and decomposed MatMul/Softmax) agree at batch
1/3/7 with the query and memory lengths T and S varied independently; a query that may see no
key gets zeros; the shape rule refuses what it should."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from conftest import ROOT

import dslc
from dslc.diagnostics import CompileError
from dslc.runtime.parity import random_inputs

WIDTH, MEMORY, HEADS = 16, 12, 4
SMALL = f"""
model M {{
    input x: f32[N, T, {WIDTH}]
    input memory: f32[N, S, {MEMORY}]
    input mask: MASK[N, S]
    output y = cross_attention(x, memory, mask, {HEADS})
}}
"""
UNMASKED = f"""
model M {{
    input x: f32[N, T, {WIDTH}]
    input memory: f32[N, S, {MEMORY}]
    output y = cross_attention(x, memory, {HEADS})
}}
"""


def session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def compiled(spec):
    """The spec's PyTorch module (eval mode, seeded) and its fused and decomposed ONNX sessions
    with the module's weights."""
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    state = model.state_dict()
    graphs = {fused: session(spec.onnx_model(weights=state, fused=fused)) for fused in (1, 0)}
    return model, {"fused": graphs[1], "decomposed": graphs[0]}


def run_torch(model, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(*(torch.from_numpy(a) for a in inputs.values())).numpy()


def random_case(n: int, t: int, s: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, t, WIDTH)).astype(np.float32)
    memory = rng.standard_normal((n, s, MEMORY)).astype(np.float32)
    keep = rng.random((n, s)) > 0.4
    keep[:, 0] = True  # every query sees some key (nn.MultiheadAttention gives NaN otherwise)
    return x, memory, keep


def multihead_reference(model: torch.nn.Module) -> torch.nn.MultiheadAttention:
    """nn.MultiheadAttention with kdim = vdim = the memory's width, holding the module's weights:
    q as its q_proj, kv's first half as k_proj and second half as v_proj, proj as out_proj."""
    (layer,) = [m for m in model.modules() if type(m).__name__ == "CrossAttention"]
    mha = torch.nn.MultiheadAttention(WIDTH, HEADS, kdim=MEMORY, vdim=MEMORY, batch_first=True)
    k, v = layer.kv.weight.split(WIDTH)
    with torch.no_grad():
        mha.q_proj_weight.copy_(layer.q.weight)
        mha.k_proj_weight.copy_(k)
        mha.v_proj_weight.copy_(v)
        mha.in_proj_bias.copy_(torch.cat([layer.q.bias, layer.kv.bias]))
        mha.out_proj.weight.copy_(layer.proj.weight)
        mha.out_proj.bias.copy_(layer.proj.bias)
    return mha.eval()


@pytest.mark.parametrize(("t", "s"), [(5, 9), (1, 7), (8, 1)])
def test_matches_multihead_attention_with_kdim_and_vdim(t, s):
    masked = dslc.compile_source(SMALL.replace("MASK", "bool"))
    plain = dslc.compile_source(UNMASKED)
    torch.manual_seed(0)
    model = masked.torch_module().eval()
    unmasked = plain.torch_module().eval()
    unmasked.load_state_dict(model.state_dict())
    mha = multihead_reference(model)
    x, memory, keep = (torch.from_numpy(a) for a in random_case(3, t, s))
    with torch.no_grad():
        expected, _ = mha(x, memory, memory, key_padding_mask=~keep, need_weights=False)
        got = model(x, memory, keep)
        everything, _ = mha(x, memory, memory, need_weights=False)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(unmasked(x, memory), everything, rtol=0, atol=1e-5)


def test_matches_sdpa_over_the_projected_heads_with_an_integer_mask():
    """The module's math written out with F.scaled_dot_product_attention: a 0/1 i64 mask hides
    the keys where it is 0."""
    spec = dslc.compile_source(SMALL.replace("MASK", "i64"))
    torch.manual_seed(1)
    model = spec.torch_module().eval()
    w = {k.split(".", 1)[1]: p for k, p in model.state_dict().items()}
    x, memory, keep = (torch.from_numpy(a) for a in random_case(2, 6, 10, seed=1))
    n, t, s, e = 2, 6, 10, WIDTH // HEADS
    q = F.linear(x, w["q.weight"], w["q.bias"]).view(n, t, HEADS, e).transpose(1, 2)
    k, v = F.linear(memory, w["kv.weight"], w["kv.bias"]).chunk(2, dim=-1)
    k, v = (z.reshape(n, s, HEADS, e).transpose(1, 2) for z in (k, v))
    heads = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
    expected = F.linear(
        heads.transpose(1, 2).reshape(n, t, WIDTH), w["proj.weight"], w["proj.bias"]
    )
    with torch.no_grad():
        torch.testing.assert_close(model(x, memory, keep.long()), expected, rtol=0, atol=1e-5)


def test_a_query_that_sees_no_key_gets_zeros_before_the_projection():
    """With every memory position of an example masked, its heads are zeros, as PyTorch's
    scaled_dot_product_attention gives: the output is proj's bias, in every backend."""
    spec = dslc.compile_source(SMALL.replace("MASK", "bool"))
    model, sessions = compiled(spec)
    x, memory, keep = random_case(3, 4, 5, seed=2)
    keep[1] = False
    inputs = {"x": x, "memory": memory, "mask": keep}
    bias = model.state_dict()["xattn1.proj.bias"].numpy()
    runs = {"torch": run_torch(model, inputs)}
    runs |= {kind: sess.run(None, inputs)[0] for kind, sess in sessions.items()}
    for kind, y in runs.items():
        assert np.isfinite(y).all(), kind
        np.testing.assert_allclose(y[1], np.broadcast_to(bias, (4, WIDTH)), atol=1e-6, err_msg=kind)
        assert np.abs(y[0] - bias).max() > 1e-2, f"{kind}: an unmasked example gave the bias"


def test_masked_memory_positions_do_not_change_the_output():
    spec = dslc.compile_source(SMALL.replace("MASK", "bool"))
    model, sessions = compiled(spec)
    x, memory, keep = random_case(2, 3, 8, seed=3)
    changed = np.where(keep[..., None], memory, 100.0).astype(np.float32)
    runs = {"torch": lambda m: run_torch(model, {"x": x, "memory": m, "mask": keep})}
    runs |= {
        k: (lambda m, s=s: s.run(None, {"x": x, "memory": m, "mask": keep})[0])
        for k, s in sessions.items()
    }
    for kind, run in runs.items():
        np.testing.assert_allclose(run(changed), run(memory), atol=1e-5, err_msg=kind)


@pytest.mark.parametrize("name", ["seq2seq_block", "small"])
def test_backends_agree_fused_and_decomposed_as_t_and_s_vary(name):
    """Batch 1/3/7 with the query length T and the memory length S each 1, 7 or 64 (random 0/1
    masks: at S = 1 many examples see no key at all)."""
    if name == "small":
        spec = dslc.compile_source(SMALL.replace("MASK", "bool"))
    else:
        spec = dslc.load(ROOT / "specs" / f"{name}.dl")
    model, sessions = compiled(spec)
    rng = np.random.default_rng(4)
    tokens = spec.graph.token_inputs()
    for t in (1, 7, 64):
        for s in (1, 7, 64):
            for batch in (1, 3, 7):
                sizes = {"T": t, "S": s}
                inputs = random_inputs(spec.graph.inputs, batch, rng, tokens=tokens, sizes=sizes)
                expected = run_torch(model, inputs)
                assert expected.shape[:2] == (batch, t)
                for kind, sess in sessions.items():
                    (got,) = sess.run(None, inputs)
                    np.testing.assert_allclose(
                        got, expected, rtol=0, atol=1e-5, err_msg=f"{kind}, T={t}, S={s}, N={batch}"
                    )


def test_onnx_graphs_attend_with_different_lengths_and_dynamic_dims():
    spec = dslc.compile_source(SMALL.replace("MASK", "bool"))
    fused, plain = spec.onnx_model(), spec.onnx_model(fused=False)
    (attention,) = [n for n in fused.graph.node if n.op_type == "Attention"]
    assert {a.name: a.i for a in attention.attribute} == {
        "q_num_heads": HEADS,
        "kv_num_heads": HEADS,
        "is_causal": 0,
    }
    assert "Attention" not in {n.op_type for n in plain.graph.node}
    assert {"MatMul", "Softmax", "Where"} <= {n.op_type for n in plain.graph.node}
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in fused.graph.input
    }
    assert dims == {"x": ["N", "T", WIDTH], "memory": ["N", "S", MEMORY], "mask": ["N", "S"]}


def test_parameters_are_q_kv_and_proj_like_nn_linear():
    spec = dslc.compile_source(SMALL.replace("MASK", "bool"))
    model = spec.torch_module()
    shapes = {k: tuple(p.shape) for k, p in model.state_dict().items()}
    assert shapes == {
        "xattn1.q.weight": (WIDTH, WIDTH),
        "xattn1.q.bias": (WIDTH,),
        "xattn1.kv.weight": (2 * WIDTH, MEMORY),
        "xattn1.kv.bias": (2 * WIDTH,),
        "xattn1.proj.weight": (WIDTH, WIDTH),
        "xattn1.proj.bias": (WIDTH,),
    }
    assert spec.param_count == sum(np.prod(s) for s in shapes.values())
    (layer,) = [m for m in model.modules() if type(m).__name__ == "CrossAttention"]
    assert all(type(m) is torch.nn.Linear for m in (layer.q, layer.kv, layer.proj))
    bound = 1 / MEMORY**0.5  # nn.Linear's default: U(-1/sqrt(in), 1/sqrt(in)) for the bias
    assert layer.kv.bias.abs().max() <= bound and layer.kv.bias.abs().max() > bound / 2
    no_bias = dslc.compile_source(UNMASKED.replace(f"{HEADS})", f"{HEADS}, bias=false)"))
    assert [k.split(".", 1)[1] for k in no_bias.torch_module().state_dict()] == [
        "q.weight",
        "kv.weight",
        "proj.weight",
    ]


def error(source: str) -> str:
    with pytest.raises(CompileError) as err:
        dslc.compile_source(source)
    (d,) = err.value.diagnostics.items
    return d.message


def test_shape_rule():
    spec = dslc.compile_source(SMALL.replace("MASK", "bool"))
    assert str(spec.graph.outputs["y"].type) == f"f32[N, T, {WIDTH}]"
    other_batch = UNMASKED.replace("memory: f32[N, S", "memory: f32[M, S")
    assert "must agree in the batch dim" in error(other_batch)
    wrong_mask = SMALL.replace("MASK[N, S]", "bool[N, T]")
    assert "padding mask must be bool or integer of shape (N, S)" in error(wrong_mask)
    float_mask = SMALL.replace("MASK", "f32")
    assert "padding mask must be bool or integer" in error(float_mask)
    assert "not divisible by 3 heads" in error(UNMASKED.replace(f"{HEADS})", "3)"))
    unknown = UNMASKED.replace(f"S, {MEMORY}]", "S, C]")
    assert "memory (N, S, width) with the width known" in error(unknown)
