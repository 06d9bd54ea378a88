"""An adversarial property test of `--kv-cache`: random small decoders (kvcache_decoders.py
writes them from the pieces decoders are made of, and from ops that mix positions), each with
one of two outcomes.

- Accepted: decoding with the cache (a prefill, single steps and a chunk of several tokens)
  gives the logits of the whole window, in the generated PyTorch (KVCache) and in onnxruntime
  (fused and decomposed attention; the window at once and step by step), with weights drawn
  wide (std 0.3) so that a key at the wrong position, a missing one or a later one seen shows.
- Refused: a located `m.dl:L:C: error: --kv-cache ...` (or one of the errors about the whole
  model: no sequence, no causal attention), and the PyTorch module has no KVCache class.

A decoder that mixes positions is never accepted, and the same spec with one attention's
causality taken away (no causal_mask, causal=false) is always refused. FOUND lists the bugs
this found (fixed), each at its smallest; the generator draws those constructs too. The runs
are deterministic (derandomize); DSLC_FUZZ_LONG=1 runs a long one."""

from __future__ import annotations

import os
import re
from collections import Counter

import hypothesis.strategies as st
import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from kvcache_decoders import STAGES, TALLY, VOCAB, Decoder, decoders
from test_kvcache import decoder_source
from test_kvcache import drawn_wide as wide
from test_train_data import one_thread  # noqa: F401  (autouse: one torch thread)

import dslc

CHUNKS = (3, 1, 1, 4, 1)  # a prefill, two steps, a chunk of several, a step: 10 positions
# Refusals about the whole model rather than a place in it (ir/causal.py).
UNLOCATED = ("has no causal attention", "has no sequence to decode", "holds every position")
LOCATED = re.compile(r"^m\.dl:\d+:\d+: error: --kv-cache ")
NONCAUSAL = ("needs causal attention", "see later ones")


# ---- running a decoder


def window(floats: bool) -> torch.Tensor:
    rng, n = torch.Generator().manual_seed(1), sum(CHUNKS)
    if floats:
        return torch.randn(2, n, 8, generator=rng)
    return torch.randint(0, VOCAB, (2, n), generator=rng)


def pieces(ids, sizes=CHUNKS) -> list:
    edges = np.cumsum((0, *sizes))
    return [ids[:, a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]


def run_onnx(session, chunks) -> np.ndarray:
    """Each chunk after the ones before it: the presents of a call are the pasts of the next."""
    (name,) = [i.name for i in session.get_inputs() if not i.name.startswith("past.")]
    outs = [o.name for o in session.get_outputs()]
    past = {
        i.name: np.zeros([2 if d == "N" else 0 if d == "P" else d for d in i.shape], np.float32)
        for i in session.get_inputs()
        if i.name.startswith("past.")
    }
    logits = []
    for chunk in chunks:
        got = dict(zip(outs, session.run(outs, {name: np.asarray(chunk), **past}), strict=True))
        logits.append(got["y"])
        past = {k.replace("present.", "past."): v for k, v in got.items() if k != "y"}
    return np.concatenate(logits, axis=1)


def close(got: np.ndarray, full: np.ndarray, what: str, text: str) -> None:
    diff = np.abs(got - full).max() if got.shape == full.shape else f"shape {got.shape}"
    assert got.shape == full.shape and diff <= 1e-4, f"{what}: max |diff| {diff}\n{text}"


def assert_refused(spec, err: Exception, text: str) -> str:
    message = str(err)
    if isinstance(err, dslc.CompileError):
        assert LOCATED.match(message) and "^" in message and "hint:" in message, message
    else:
        assert isinstance(err, dslc.DslcError), message
        assert message.startswith("--kv-cache: ") and any(u in message for u in UNLOCATED), message
    assert "class KVCache" not in spec.torch_source(), text
    return message


def why(message: str) -> str:
    """A refusal's reason, for the tally: `cannot serve softmax`, `has no causal attention`."""
    first = message.split("\n")[0].split("--kv-cache", 1)[1]
    return re.split(r": (?:it|its) ", first.removeprefix(" ").removeprefix(": "))[0][:48]


def decodes(text: str) -> bool:
    """Whether --kv-cache accepts the spec; where it does, the cached logits are the whole
    window's, in PyTorch and onnxruntime (fused, decomposed)."""
    spec = dslc.compile_source(text, "m.dl")  # the generator writes valid specs
    ns, module = wide(spec)
    weights = {k: v.numpy() for k, v in module.state_dict().items()}
    try:
        models = {f: spec.onnx_model(weights=weights, fused=f, kv_cache=True) for f in (1, 0)}
    except (dslc.CompileError, dslc.DslcError) as err:
        TALLY[why(assert_refused(spec, err, text))] += 1
        return False
    ids = window(floats="input tokens" not in text)
    with torch.no_grad():
        full = module(ids).numpy()
        assert np.isfinite(full).all(), text
        assert "KVCache" in ns, text
        cache = ns["KVCache"](module)
        cached = np.concatenate([cache(c).numpy() for c in pieces(ids)], axis=1)
    close(cached, full, "PyTorch KVCache", text)
    for fused, model in models.items():
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        what = f"onnxruntime ({'fused' if fused else 'decomposed'})"
        close(run_onnx(session, [ids.numpy()]), full, f"{what}, the window at once", text)
        close(run_onnx(session, pieces(ids.numpy())), full, f"{what}, cached", text)
    return True


def refuses_noncausal(d: Decoder, drop: int, accepted: bool) -> None:
    """The spec with attention `drop` no longer causal: refused, for that reason where the
    causal spec was accepted."""
    text = d.source(drop)
    spec = dslc.compile_source(text, "m.dl")
    with pytest.raises((dslc.CompileError, dslc.DslcError)) as err:
        spec.onnx_export(kv_cache=True)
    message = assert_refused(spec, err.value, text)
    assert not accepted or any(n in message for n in NONCAUSAL), f"{message}\n{text}"


def fuzz(examples: int, known_bugs: bool = True) -> Counter:
    """`examples` decoders: each decodes right or is refused, and without one attention's
    causality is refused. Returns how many were accepted and refused."""
    seen: Counter = Counter()

    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, *([] if known_bugs else [Phase.shrink])],
    )
    @given(decoders(known_bugs), st.integers(0, 99))
    def check(d: Decoder, k: int) -> None:
        accepted = decodes(d.source())
        seen["accepted" if accepted else "refused"] += 1
        seen["poisoned and accepted"] += d.poisoned and accepted
        if d.marks:
            refuses_noncausal(d, k % d.marks, accepted)
            seen["refused without causality"] += 1

    check()
    return seen


# ---- the tests


def test_random_decoders_decode_with_the_cache_or_are_refused():
    """500 decoders, some 20 s: more than half accepted and checked step by step, the others
    refused at the op (every one that mixes positions among them); every piece drawn."""
    before = Counter(TALLY)
    seen = fuzz(500)
    assert seen["accepted"] >= 150 and seen["refused"] >= 100, seen  # both sides are tested
    assert seen["poisoned and accepted"] == 0, seen
    assert seen["refused without causality"] >= 450, seen
    drawn = TALLY - before
    assert all(drawn[stage.__name__] >= 10 for stage in STAGES), drawn


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DSLC_FUZZ_LONG"), reason="set DSLC_FUZZ_LONG=1")
def test_many_random_decoders():
    """3,000 decoders, some 2 minutes: DSLC_FUZZ_LONG=1 pytest -m slow."""
    seen = fuzz(3000)
    assert seen["poisoned and accepted"] == 0, seen


# What this test found, each as small as it goes: specs --kv-cache accepted whose cached
# decoding was wrong or failed (and one PyTorch miscompile), fixed since; kept as regression
# cases. known_bugs=True puts these constructs in the generator too.
MASKED = (
    "    q, k, v = x -> linear(24) -> split(3)\n"
    "    s = matmul(q, k -> transpose(1, 2)) -> causal_mask\n"
    "{}"
    "    output y = matmul(w, v) -> linear(16)\n"
)
FOUND = {
    # ir/positions.py kept scores "masked" through any elementwise op or reduction, though a
    # later key is -inf (before the softmax) or 0 (after) only as long as nothing changes it:
    # now HIDDEN and ZERO, kept only by the ops that keep them; all four are refused.
    "relu_after_the_mask": (
        "causal_mask -> relu makes the later keys 0, not -inf: the softmax gives them weight",
        MASKED.format("    w = s -> relu -> softmax\n"),
    ),
    "softmax_twice": (
        "a second softmax over the keys gives the later keys (weight 0) exp(0)",
        MASKED.format("    w = s -> softmax -> softmax\n"),
    ),
    "weights_plus_a_constant": (
        "(w + 0.5) gives the later keys weight 0.5 in matmul(w, v)",
        MASKED.format("    w = (s -> softmax) + 0.5\n"),
    ),
    "mean_over_the_keys": (
        "mean over the keys divides by every key, later ones too: P + T in a step",
        MASKED.format("    p = s -> softmax\n    w = p * (p -> mean(axis=-1, keepdim=true))\n"),
    ),
    # ir/causal.py: a kept tensor that was a graph input was never extended (Flow.run
    # extends node outputs only), and a step failed: now refused, located.
    "graph_input_as_the_values": (
        "the values are the input x, which the plan marks as kept but never extends",
        "model M {\n    input x: f32[N, T, 8]\n    q = x -> linear(8)\n    k = x -> linear(8)\n"
        "    w = matmul(q, k -> transpose(1, 2)) -> causal_mask -> softmax\n"
        "    output y = matmul(w, x)\n}\n",
    ),
    # backends/torch: KVCache's extend lines (now: not after a block's call; after a loop,
    # for the value it carries).
    "block_output_as_the_values": (
        "torch: a block's output kept is extended twice, in the block and after its call",
        "block B {\n    input x: f32[N, T, 8]\n    output y = x -> linear(8)\n}\n\n"
        + "model M {\n    input tokens: i64[N, T]\n    x = tokens -> embedding(16, 8)\n"
        "    v = x -> B\n    w = matmul(x, x -> transpose(1, 2)) -> causal_mask -> softmax\n"
        "    output y = matmul(w, v) -> linear(16)\n}\n",
    ),
    "repeated_stage_as_the_keys": (
        "torch: a kept tensor a loop makes is extended inside the loop, once per repetition",
        "    q = x -> linear(8)\n    v = x -> linear(8)\n    k = x -> linear(8) * 2\n"
        "    w = matmul(q, k -> transpose(1, 2)) -> causal_mask -> softmax\n"
        "    output y = matmul(w, v) -> linear(16)\n",
    ),
    # backends/torch (plain PyTorch, with or without a cache): after `h = x -> linear(8) * 2`
    # forward read x as h, the loop's variable, so that h + x was written h + h.
    "repeated_stage_input_read_after": (
        "torch: after a repeated stage its input reads as the loop's variable (h + x is h + h)",
        "    h = x -> linear(8) * 2\n    output y = (h + x) -> attention(2, causal=true)\n",
    ),
}


def bug_source(body: str) -> str:
    """A whole spec as it is, or a decoder's body in test_kvcache's decoder."""
    return body if body.startswith(("model", "block")) else decoder_source(body)


REFUSED_NOW = {
    "relu_after_the_mask",
    "softmax_twice",
    "weights_plus_a_constant",
    "mean_over_the_keys",
    "graph_input_as_the_values",
}


@pytest.mark.parametrize("name", list(FOUND))
def test_what_was_found(name):
    """Each decodes right (PyTorch and onnxruntime, step by step), or is refused at the op."""
    accepted = decodes(bug_source(FOUND[name][1]))
    assert accepted == (name not in REFUSED_NOW), FOUND[name][0]


def test_a_decoder_without_one_attentions_causality():
    """A decoder's text without one attention's causality differs only there."""
    d = Decoder(bug_source(MASKED.format("    w = s -> softmax\n")), 0, False)
    assert d.source() == d.text
    marked = Decoder(d.text.replace(" -> causal_mask", "<mask0>"), 1, False)
    assert marked.source() == d.text and "causal_mask" not in marked.source(0)
    assert decodes(marked.source())  # the plain by-hand decoder decodes right
