"""Decoding with a cache of keys and values: the generated KVCache (PyTorch) and
`dslc compile --target onnx --kv-cache` (onnxruntime, fused and decomposed attention) give,
position by position, the logits the model gives on the whole window, for attention as one op
and written by hand (matmul and causal_mask, or scaled_dot_product_attention); the shapes of a
prefill and a decode step; the window sliding past the context; the specs a cache cannot
serve; and `dslc generate` writing the same tokens with and without the cache."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT
from test_train_data import one_thread  # noqa: F401  (autouse: one torch thread)

from dslc.api import load
from dslc.cli import main
from dslc.runtime.generate import Model, Options, generate, onnx_model, torch_model
from dslc.runtime.train.checkpoint import save_weights

GPT = str(ROOT / "specs/tiny_gpt.dl")
PARAMS = {"context": 96, "width": 32, "heads": 4, "layers": 2}  # room for a prompt + 64 steps
PROMPT, STEPS = 16, 64


# Decoders whose attention is one op, or written by hand: matmul, causal_mask and softmax
# (the cache keeps the heads' keys kh, not kt = kh^T), or scaled_dot_product_attention.
DECODERS = {
    "attention_op": (GPT, PARAMS),
    "matmul_by_hand": (str(ROOT / "specs/tiny_gpt_by_hand.dl"), {"context": 96}),
    "sdpa_by_hand": (
        str(ROOT / "specs/swiglu_decoder.dl"),
        {"context": 96, "width": 32, "heads": 4, "hidden": 64},
    ),
}


def wide(spec_path: str, params: dict):
    """The spec, its generated namespace and a module whose weights are drawn wide."""
    spec = load(spec_path, params)
    return (spec, *drawn_wide(spec))


def drawn_wide(spec):
    """The generated namespace and a module whose weights are drawn wide (std 0.3): sharp
    attention, so that a key at the wrong position or a missing one shows."""
    ns = spec.torch_namespace()
    torch.manual_seed(0)
    module = ns["create_model"]().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)
    return ns, module


@pytest.fixture(scope="module")
def gpt():
    return wide(GPT, PARAMS)


@pytest.fixture(scope="module", params=list(DECODERS))
def decoder(request):
    return wide(*DECODERS[request.param])


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (1, PROMPT + STEPS), generator=torch.Generator().manual_seed(1))


def full_window(module, ids) -> np.ndarray:
    with torch.no_grad():
        return module(ids).numpy()


def pieces(ids) -> list:
    """The prompt, then one token per decode step."""
    return [ids[:, :PROMPT]] + [ids[:, i : i + 1] for i in range(PROMPT, ids.shape[1])]


def test_torch_cache_equals_the_full_window_over_64_steps(decoder, ids):
    _, ns, module = decoder
    cache = ns["KVCache"](module)
    with torch.no_grad():
        cached = np.concatenate([cache(p).numpy() for p in pieces(ids)], axis=1)
    full = full_window(module, ids)
    assert np.abs(full).max() > 1.0  # logits large enough for a misplaced key to show
    np.testing.assert_allclose(cached, full, atol=1e-4, rtol=0)
    assert cache.length == ids.shape[1]
    cache.reset()  # empty again: the prompt alone gives its own logits
    with torch.no_grad():
        np.testing.assert_allclose(cache(ids[:, :5]).numpy(), full[:, :5], atol=1e-4, rtol=0)
    # the module itself is left as it was: a plain call sees no cache
    np.testing.assert_allclose(full_window(module, ids[:, :5]), full[:, :5], atol=1e-5, rtol=0)


def onnx_session(spec, module, fused: bool):
    weights = {k: v.numpy() for k, v in module.state_dict().items()}
    model = spec.onnx_model(weights=weights, fused=fused, kv_cache=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def empty_past(session, batch: int = 1) -> dict[str, np.ndarray]:
    """Each past (N, heads, P, head size) with P = 0, read from the model's inputs."""
    return {
        i.name: np.zeros([batch if d == "N" else 0 if d == "P" else d for d in i.shape], np.float32)
        for i in session.get_inputs()
        if i.name.startswith("past.")
    }


def run_cached(session, chunks) -> np.ndarray:
    names = [o.name for o in session.get_outputs()]
    past, logits = empty_past(session, chunks[0].shape[0]), []
    for chunk in chunks:
        outs = session.run(names, {"tokens": np.asarray(chunk), **past})
        logits.append(outs[0])
        past = {n.replace("present.", "past."): v for n, v in zip(names[1:], outs[1:], strict=True)}
    return np.concatenate(logits, axis=1)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "decomposed"])
def test_onnx_cache_equals_the_full_window_over_64_steps(decoder, ids, fused):
    spec, _, module = decoder
    session = onnx_session(spec, module, fused)
    cached = run_cached(session, pieces(ids))
    np.testing.assert_allclose(cached, full_window(module, ids), atol=1e-4, rtol=0)
    chunks = [ids[:, :5], ids[:, 5:12], ids[:, 12:13], ids[:, 13:40]]  # several at a time
    np.testing.assert_allclose(
        run_cached(session, chunks), full_window(module, ids[:, :40]), atol=1e-4, rtol=0
    )


def test_hand_written_keys_are_kept_per_head():
    """tiny_gpt_by_hand compares queries with kt = kh -> transpose(-2, -1): the decoder keeps
    kh, (N, heads, P, head size), the layout of the one-op attention's cache."""
    spec = load(*DECODERS["matmul_by_hand"])
    model = spec.onnx_model(kv_cache=True)
    inputs = {i.name: i for i in model.graph.input}
    dims = [d.dim_param or d.dim_value for d in inputs["past.0.key"].type.tensor_type.shape.dim]
    assert dims == ["N", 2, "P", 16]
    assert sorted(inputs) == ["past.0.key", "past.0.value", "past.1.key", "past.1.value", "tokens"]
    source = spec.torch_source()
    assert "kh = self.cache.extend(kh, dim=2)" in source
    assert "vh = self.cache.extend(vh, dim=2)" in source


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "decomposed"])
def test_prefill_and_decode_shapes(gpt, fused):
    """Batch 3: a prefill of 7 tokens, then a step of 1; the present of each layer is its past
    with the new positions appended, and the new logits match the torch module's."""
    spec, _, module = gpt
    session = onnx_session(spec, module, fused)
    names = [i.name for i in session.get_inputs()]
    assert names == ["tokens", "past.0.key", "past.0.value", "past.1.key", "past.1.value"]
    outs = [o.name for o in session.get_outputs()]
    assert outs == [
        "logits",
        "present.0.key",
        "present.0.value",
        "present.1.key",
        "present.1.value",
    ]
    tokens = np.random.default_rng(2).integers(0, 256, (3, 8))
    first = session.run(None, {"tokens": tokens[:, :7], **empty_past(session, 3)})
    assert first[0].shape == (3, 7, 256)
    assert all(p.shape == (3, 4, 7, 8) for p in first[1:])  # (N, heads, P + T, width / heads)
    past = dict(zip(names[1:], first[1:], strict=True))
    second = session.run(None, {"tokens": tokens[:, 7:], **past})
    assert second[0].shape == (3, 1, 256)
    assert all(p.shape == (3, 4, 8, 8) for p in second[1:])
    for old, new in zip(first[1:], second[1:], strict=True):
        np.testing.assert_array_equal(new[:, :, :7], old)  # the past comes back unchanged first
    full = full_window(module, torch.from_numpy(tokens))
    np.testing.assert_allclose(second[0], full[:, 7:], atol=1e-4, rtol=0)


def test_the_window_slides_by_prefilling_the_last_context_tokens():
    """Past the context the cache is emptied and the window's tokens prefilled again: every
    call is what the full window would be, and the cache holds at most `context` tokens."""
    calls = []

    def cached(new: np.ndarray, reset: bool) -> np.ndarray:
        calls.append((new.shape[1], reset))
        return np.eye(10, dtype=np.float32)[len(calls) % 10]

    model = Model(lambda w: np.zeros(10, np.float32), 10, 4, cached)
    out = generate(model, [1, 2], 4, Options(max_new_tokens=6, temperature=0.0))
    assert len(out) == 8
    # prefill 2, decode 1, 1 (4 held), then the window slides: 4 tokens again each time
    assert calls == [(2, True), (1, False), (1, False), (4, True), (4, True), (4, True)]


def test_sliding_window_tokens_equal_without_the_cache(gpt, ids, tmp_path):
    """Greedy and sampled, through the generated module: 40 tokens from a 12-token context,
    so that the window slides 30 times."""
    spec, ns, module = gpt
    weights = tmp_path / "w.safetensors"
    save_weights(weights, module.state_dict(), {})
    m = torch_model(GPT, str(weights), PARAMS)
    assert m.cached is not None
    start = ids[0, :5].tolist()
    for o in (Options(max_new_tokens=40, temperature=0.0), Options(max_new_tokens=40, seed=3)):
        with_cache = generate(m, start, 12, o)
        o.kv_cache = False
        assert generate(m, start, 12, o) == with_cache


@pytest.fixture(scope="module")
def saved(gpt, tmp_path_factory):
    """The module's weights and its --kv-cache ONNX decoders, fused and not."""
    spec, _, module = gpt
    out = tmp_path_factory.mktemp("kv")
    save_weights(out / "weights.safetensors", module.state_dict(), {})
    for fused in (True, False):
        weights = {k: v.numpy() for k, v in module.state_dict().items()}
        model = spec.onnx_model(weights=weights, fused=fused, kv_cache=True)
        (out / f"fused{int(fused)}.onnx").write_bytes(model.SerializeToString())
    return out


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_generate_is_the_same_with_and_without_the_cache(saved, ids, temperature):
    """PyTorch, ONNX fused and ONNX decomposed, each cached and recomputing the window: one
    text, 70 tokens after a 16-token prompt (the 96-token context not yet full)."""
    models = [torch_model(GPT, str(saved / "weights.safetensors"), PARAMS)]
    models += [onnx_model(str(saved / f"fused{f}.onnx"), 96) for f in (1, 0)]
    start, texts = ids[0, :PROMPT].tolist(), []
    for m in models:
        assert m.cached is not None
        for cache in (True, False):
            o = Options(max_new_tokens=70, temperature=temperature, seed=5, kv_cache=cache)
            texts.append(generate(m, start, 96, o))
    assert all(t == texts[0] for t in texts)
    assert temperature == 0 or len(set(texts[0][PROMPT:])) > 10  # a varied text


def compile_kv(spec: str, tmp_path, *extra: str) -> int:
    out = str(tmp_path / "m.onnx")
    return main(["compile", str(ROOT / spec), "--target", "onnx", "--kv-cache", "-o", out, *extra])


@pytest.mark.parametrize(
    "spec, message",
    [
        ("specs/sequence_tagger.dl", "--kv-cache needs causal attention"),
        ("specs/bert_base.dl", "--kv-cache needs causal attention"),
    ],
)
def test_kv_cache_refuses_attention_it_cannot_cache(spec, message, tmp_path, capsys):
    assert compile_kv(spec, tmp_path) == 1
    err = capsys.readouterr().err
    assert f"{spec}:" in err and "error: --kv-cache" in err and message in err
    assert "^" in err and "hint:" in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def decoder_source(body: str) -> str:
    return (
        f"model M {{\n    input tokens: i64[N, T]\n    x = tokens -> embedding(16, 8)\n{body}}}\n"
    )


# A step sees only the new positions and the kept keys and values: whatever else mixes
# positions is refused where the spec writes it (line, column), and so is attention that lets
# a position see later ones.
REFUSED = {
    "unmasked_scores": (
        "    q, k, v = x -> linear(24) -> split(3)\n"
        "    w = matmul(q, k -> transpose(1, 2)) -> softmax\n"
        "    output y = matmul(w, v)\n",
        "5:44: error: --kv-cache cannot serve softmax: it lets each position see later ones",
    ),
    "noncausal_sdpa": (
        "    h = x -> reshape([N, T, 2, 4]) -> transpose(1, 2)\n"
        "    output y = scaled_dot_product_attention(h, h, h)\n",
        "5:16: error: --kv-cache needs causal attention",
    ),
    "mean_over_time": (
        "    output y = x - (x -> mean(axis=1, keepdim=true))\n",
        "4:26: error: --kv-cache cannot serve mean: it mixes the new positions",
    ),
    "recurrent": (
        "    output y = x -> lstm(8)\n",
        "4:21: error: --kv-cache cannot serve lstm: it steps along the sequence",
    ),
    "conv_along_time": (
        "    output y = x -> transpose(1, 2) -> conv1d(8, 3, padding=1)\n",
        "4:40: error: --kv-cache cannot serve conv1d: it mixes the new positions",
    ),
    "index_along_time": (
        "    output y = x[:, -1]\n",
        "4:16: error: --kv-cache cannot serve index: it picks positions of the sequence",
    ),
    "undeclared_op": (
        "    output y = x -> pad([1, 1])\n",
        "4:21: error: --kv-cache cannot serve pad: dslc does not know how it treats",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_kv_cache_refuses_what_mixes_positions(case):
    import dslc

    body, message = REFUSED[case]
    spec = dslc.compile_source(decoder_source(body), "m.dl")
    with pytest.raises(dslc.CompileError) as err:
        spec.onnx_export(kv_cache=True)
    text = str(err.value)
    assert f"m.dl:{message}" in text and "^" in text and "hint:" in text
    assert "class KVCache" not in spec.torch_source()  # nor does the PyTorch module get one


def test_any_causal_spec_decodes_with_the_cache():
    """One head without a projection, its queries, keys and values subscripts of the features
    (x[..., :8]), the scores scaled and masked by hand: the cache keeps k^T's source, k, and v,
    and decoding agrees with the whole window in PyTorch and onnxruntime."""
    import dslc

    body = (
        "    q = x[..., :3]\n"
        "    k = x[..., 3:6]\n"
        "    v = x[..., 6:]\n"
        "    w = matmul(q, k -> transpose(1, 2)) * 0.5 -> causal_mask -> softmax\n"
        "    output y = matmul(w, v) -> linear(16)\n"
    )
    spec = dslc.compile_source(decoder_source(body), "m.dl")
    ns = spec.torch_namespace()
    torch.manual_seed(0)
    module = ns["create_model"]().eval()
    tokens = torch.randint(0, 16, (2, 30), generator=torch.Generator().manual_seed(5))
    full = full_window(module, tokens)
    cache = ns["KVCache"](module)
    with torch.no_grad():
        cached = [
            cache(tokens[:, :6]).numpy(),
            *(cache(tokens[:, i : i + 1]).numpy() for i in range(6, 30)),
        ]
    np.testing.assert_allclose(np.concatenate(cached, axis=1), full, atol=1e-5, rtol=0)
    weights = {k: v.numpy() for k, v in module.state_dict().items()}
    session = ort.InferenceSession(
        spec.onnx_model(weights=weights, kv_cache=True).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    names = [i.name for i in session.get_inputs()]
    assert names == ["tokens", "past.0.key", "past.0.value"]
    chunks = [tokens[:, :6], *(tokens[:, i : i + 1] for i in range(6, 30))]
    np.testing.assert_allclose(run_cached(session, chunks), full, atol=1e-5, rtol=0)


def test_kv_cache_serves_an_encoder_decoder_on_its_target():
    """specs/seq2seq_block.dl: the source comes first, the target's tokens after it; the cache
    keeps the decoder's self-attention (causal) and not the encoder's, and the target's
    positions count from P while the source's start at 0."""
    spec = load(str(ROOT / "specs/seq2seq_block.dl"))
    ns = spec.torch_namespace()
    torch.manual_seed(0)
    module = ns["create_model"]().eval()
    assert "KVCache" not in ns  # KVCache runs a model of one input
    rng = np.random.default_rng(3)
    source = rng.integers(0, 100, (2, 9))
    keep = np.ones((2, 9), bool)
    keep[1, 6:] = False
    tokens = rng.integers(0, 100, (2, 20))
    with torch.no_grad():
        full = module(*(torch.from_numpy(a) for a in (source, keep, tokens))).numpy()
    weights = {k: v.numpy() for k, v in module.state_dict().items()}
    for fused in (True, False):
        session = ort.InferenceSession(
            spec.onnx_model(weights=weights, fused=fused, kv_cache=True).SerializeToString(),
            providers=["CPUExecutionProvider"],
        )
        names, past, logits = [o.name for o in session.get_outputs()], empty_past(session, 2), []
        for chunk in (tokens[:, :8], *(tokens[:, i : i + 1] for i in range(8, 20))):
            feed = {"source": source, "source_mask": keep, "tokens": chunk, **past}
            outs = session.run(names, feed)
            logits.append(outs[0])
            past = {
                n.replace("present.", "past."): v for n, v in zip(names[1:], outs[1:], strict=True)
            }
        np.testing.assert_allclose(np.concatenate(logits, axis=1), full, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("specs/mlp.dl", "has no sequence to decode"),
        ("specs/vit_tiny.dl", "has no sequence to decode"),  # its attention sees every patch
    ],
)
def test_kv_cache_on_a_model_without_a_decoder_is_an_error(spec, message, tmp_path, capsys):
    assert compile_kv(spec, tmp_path) == 1
    err = capsys.readouterr().err
    assert "error: --kv-cache: model" in err and f"({ROOT / spec})" in err and message in err
    assert "Traceback" not in err and not (tmp_path / "m.onnx").exists()


def test_compile_writes_a_decoder_that_generate_uses(saved, tmp_path, capsys):
    """`dslc compile --kv-cache` then `dslc generate --onnx` (with a bytes tokenizer) prints the
    same text as the spec and its weights, with and without the cache; the compiled decoder
    says its context (dslc.context), as the one `dslc train` exports does."""
    from dslc.runtime.train import tokenizer as tok

    params = [f"--param={k}={v}" for k, v in PARAMS.items()]
    assert compile_kv(GPT, tmp_path, "--weights", str(saved / "weights.safetensors"), *params) == 0
    tok.save(tok.create("bytes", "", 256), tmp_path / tok.FILE)
    tokenizer = ["--tokenizer", str(tmp_path / tok.FILE)]
    common = ["--prompt", "The cache ", "--max-new-tokens", "30", "--temperature", "0"]
    meta = onnx.load(str(tmp_path / "m.onnx")).metadata_props
    assert {p.key: p.value for p in meta}["dslc.context"] == "96"  # its positional table's size
    outs = []
    for source in (
        ["--onnx", str(tmp_path / "m.onnx")],  # the context from the model's metadata
        [GPT, "--weights", str(saved / "weights.safetensors"), *params],
    ):
        for cache in ([], ["--no-kv-cache"]):
            capsys.readouterr()
            assert main(["generate", *source, *common, *tokenizer, *cache]) == 0
            outs.append(capsys.readouterr().out)
    assert len(set(outs)) == 1 and outs[0].startswith("The cache ")


@pytest.mark.parametrize("name", ["matmul_by_hand", "sdpa_by_hand"])
def test_generate_decodes_attention_written_by_hand_with_the_cache(name, tmp_path, capsys):
    """The same text from `dslc generate --onnx` on the `--kv-cache` decoder and from the spec
    and its weights (the generated KVCache), each with and without the cache."""
    from dslc.runtime.train import tokenizer as tok

    path, values = DECODERS[name]
    _, _, module = wide(path, values)
    save_weights(tmp_path / "w.safetensors", module.state_dict(), {})
    params = [f"--param={k}={v}" for k, v in values.items()]
    assert compile_kv(path, tmp_path, "--weights", str(tmp_path / "w.safetensors"), *params) == 0
    tok.save(tok.create("bytes", "", 256), tmp_path / tok.FILE)
    common = ["--prompt", "By hand ", "--max-new-tokens", "40", "--temperature", "0"]
    common += ["--tokenizer", str(tmp_path / tok.FILE)]
    outs = []
    for source in (
        ["--onnx", str(tmp_path / "m.onnx")],
        [path, "--weights", str(tmp_path / "w.safetensors"), *params],
    ):
        for cache in ([], ["--no-kv-cache"]):
            capsys.readouterr()
            assert main(["generate", *source, *common, *cache]) == 0
            outs.append(capsys.readouterr().out)
    assert len(set(outs)) == 1 and outs[0].startswith("By hand ")


def test_kv_cache_on_a_sequence_model_without_attention_is_an_error():
    import dslc

    spec = dslc.compile_source(decoder_source("    output y = x -> linear(4)\n"), "m.dl")
    with pytest.raises(dslc.DslcError, match="model M .m.dl. has no causal attention"):
        spec.onnx_export(kv_cache=True)


def test_kv_cache_is_for_onnx(tmp_path, capsys):
    assert compile_kv(GPT, tmp_path, "--target", "torch") == 1
    assert "error: --kv-cache is for --target onnx" in capsys.readouterr().err


def test_kv_cache_refuses_a_padding_mask():
    import dslc

    source = """model M {
    input tokens: i64[N, T]
    input keep: bool[N, T]
    x = tokens -> embedding(16, 8)
    output y = attention(x, keep, 2, causal=true)
}
"""
    spec = dslc.compile_source(source, "m.dl")
    with pytest.raises(dslc.CompileError) as err:
        spec.onnx_export(kv_cache=True)
    text = str(err.value)
    assert "m.dl:5:16: error: --kv-cache does not support a padding mask" in text
    assert "^" in text
