"""`dslc generate`: text from a trained language model, run by PyTorch (a spec and its
weights) or by onnxruntime (the model.onnx of `dslc train --export-onnx`).

Both paths give the same text for the same seed: a model here is only a function from a window
of token ids to the next token's logits, and one NumPy function (`sample`) picks the token.
Logits are float32 in both runtimes and differ by about 1e-6, so greedy decoding agrees; a
sampled token could differ only when a uniform draw falls within that distance of a boundary
between two tokens' cumulative probabilities, which is vanishingly rare.

The window is the last `context` tokens: the spec's TRAINING["context"] (or its input's fixed
T), or for ONNX the model's metadata_props entry "dslc.context", which the export writes
(or the input's fixed T). `--context` overrides either. An empty prompt starts from a newline,
which is not printed.

With a cache of keys and values (a spec whose attention is the causal one-op form, run by the
generated KVCache; or an ONNX model compiled with --kv-cache), the prompt is run once (the
prefill) and each new token is one decode step of one position. When the window is full and
slides on, positions are absolute (the positional table's rows), so the cache cannot be kept:
it is emptied and the window's last `context` tokens prefilled again. Every token is then the
one the full window gives, cached or not; past the context each token costs one full window,
as without the cache, and the speed-up holds for the first `context` tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dslc.errors import DslcError
from dslc.runtime.train import tokenizer as tok

START = "\n"  # what an empty prompt starts from: a line break is how most text begins anew


@dataclass
class Options:
    spec: str | None = None
    weights: str | None = None
    onnx: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    prompt: str = ""
    max_new_tokens: int = 200
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0
    tokenizer: str | None = None
    context: int | None = None
    kv_cache: bool = True  # decode with the model's cache where it has one


@dataclass
class Model:
    """The next token's logits (V,) of a (1, T) window of ids; its vocabulary and context.
    `cached`, for a model with a cache of keys and values: the next token's logits after the
    (1, t) ids that follow the cached ones, emptying the cache first when told to."""

    step: Callable[[np.ndarray], np.ndarray]
    vocab: int
    context: int | None
    cached: Callable[[np.ndarray, bool], np.ndarray] | None = None


def sample(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    """The next token: argmax for temperature 0; otherwise a draw from softmax(logits / t) in
    float64 over the `top_k` largest logits (all for 0)."""
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max())
    return int(rng.choice(z.size, p=p / p.sum()))


def generate(model: Model, ids: list[int], context: int, o: Options) -> list[int]:
    """`ids` followed by `o.max_new_tokens` more, each from the last `context` before it."""
    rng = np.random.default_rng(o.seed)
    ids = list(ids)
    decode = _decoder(model.cached, context) if o.kv_cache and model.cached else None
    for _ in range(o.max_new_tokens):
        if decode:
            logits = decode(ids)
        else:
            logits = model.step(np.asarray(ids[-context:], dtype=np.int64)[None, :])
        ids.append(sample(logits, o.temperature, o.top_k, rng))
    return ids


def _decoder(cached: Callable[[np.ndarray, bool], np.ndarray], context: int):
    """The next token's logits after `ids`, through the cache: one decode step while the
    window's start stays, the window prefilled again once it has slid (see above)."""
    held = [0, 0]  # the cache holds ids[held[0]:held[1]]

    def next_logits(ids: list[int]) -> np.ndarray:
        start = max(0, len(ids) - context)
        fresh = held[0] != start or held[1] <= start
        if fresh:
            held[:] = [start, start]
        new = np.asarray(ids[held[1] :], dtype=np.int64)[None, :]
        held[1] = len(ids)
        return cached(new, fresh)

    return next_logits


def run(o: Options) -> str:
    """The prompt and the generated text."""
    if o.context is not None:
        check_context(o.context, "--context")
    model, beside = _open(o)
    tokenizer = tok.load(Path(o.tokenizer) if o.tokenizer else beside.parent / tok.FILE)
    context = o.context or model.context
    if context is None:
        raise DslcError(
            "the model does not say how many tokens of context it takes",
            hint="give --context N (the positional table's size, e.g. 64)",
        )
    start = tokenizer.encode(o.prompt or START).tolist()
    _check_ids(start, model.vocab, tokenizer)
    ids = generate(model, start, context, o)
    return tokenizer.decode(ids if o.prompt else ids[len(start) :])


def _open(o: Options) -> tuple[Model, Path]:
    """The model, and the file beside which its tokenizer.json is."""
    if o.onnx:
        if o.spec or o.weights:
            raise DslcError("give a spec and --weights, or --onnx, not both")
        return onnx_model(o.onnx, o.context), Path(o.onnx)
    if not o.spec or not o.weights:
        raise DslcError(
            "dslc generate needs a spec and its --weights, or --onnx MODEL",
            hint="dslc generate specs/tiny_gpt.dl --weights runs/NAME/best.safetensors",
        )
    return torch_model(o.spec, o.weights, o.params), Path(o.weights)


def _check_ids(ids: list[int], vocab: int, tokenizer: tok.Tokenizer) -> None:
    if tokenizer.vocab_size > vocab or max(ids, default=0) >= vocab:
        raise DslcError(
            f"the {tokenizer.kind} tokenizer has {tokenizer.vocab_size} tokens, "
            f"but the model knows {vocab}",
            hint="use the tokenizer.json of the run that trained the model",
        )


def torch_model(spec_path: str, weights: str, params: dict[str, Any]) -> Model:
    import torch

    from dslc.api import load
    from dslc.runtime.train.checkpoint import load_weights

    spec = load(spec_path, params)
    ns = spec.torch_namespace()
    if len(ns.get("TOKENS", {})) != 1:
        raise DslcError(f"model {spec.name} is not a language model (one token input)")
    module = ns["create_model"]()
    load_weights(module, Path(weights))
    module.eval()

    @torch.no_grad()
    def run(model: Callable, window: np.ndarray) -> np.ndarray:
        try:
            out = model(torch.from_numpy(window))
        except (ValueError, RuntimeError) as err:  # e.g. a window longer than the table
            raise _refused(window, err) from None
        out = out[0] if isinstance(out, tuple) else out
        return out[0, -1].float().numpy()

    cache = ns["KVCache"](module) if "KVCache" in ns else None  # the spec's decoder has one

    def cached(ids: np.ndarray, reset: bool) -> np.ndarray:
        assert cache is not None
        if reset:
            cache.reset()
        return run(cache, ids)

    vocab = next(iter(ns["TOKENS"].values()))
    return Model(lambda w: run(module, w), vocab, spec_context(spec), cached if cache else None)


def spec_context(spec: Any) -> int | None:
    """A language model's tokens per window, from its spec: the train section's `context` or
    the token input's fixed T, at most its positional table's size; None if nothing says."""
    from dslc.runtime.train.text import context_length, max_positions

    ns = spec.torch_namespace()
    try:
        context: int | None = context_length(ns.get("TRAINING", {}), ns["INPUTS"], spec.name)
    except DslcError:  # the positional table or --context may still say it
        context = None
    known = [n for n in (context, max_positions(spec.graph)) if n]  # longer cannot run
    return min(known) if known else None


def _refused(window: np.ndarray, why: object) -> DslcError:
    return DslcError(
        f"the model refused a window of {window.shape[1]} tokens: {why}",
        hint="a smaller --context (at most the positional table's size)",
    )


def onnx_model(path: str, context: int | None = None) -> Model:
    """The model.onnx of a language model; its context is `context` (--context) when given,
    else the model's metadata (dslc.context), else its input's fixed T."""
    from dslc.runtime.run import _ORT_ERRORS, _ort_message, open_session

    session = open_session(path)
    x, out = _lm_signature(path, session)
    cached = _onnx_cache(session, x.name, out.name)

    def step(window: np.ndarray) -> np.ndarray:
        if cached:  # a model with a cache: the whole window as a prefill
            return cached(window, True)
        try:
            return session.run([out.name], {x.name: window})[0][0, -1]
        except _ORT_ERRORS as err:
            raise _refused(window, _ort_message(err)) from None

    fixed = x.shape[1] if isinstance(x.shape[1], int) and x.shape[1] > 0 else None
    known = context or _metadata_context(path, session) or fixed
    return Model(step, out.shape[-1], known, cached)


def _onnx_cache(session: Any, x: str, out: str) -> Callable[[np.ndarray, bool], np.ndarray] | None:
    """Model.cached for an ONNX model compiled with --kv-cache (None for one without): the
    present keys and values of each run are the past of the next."""
    from dslc.runtime.run import _ORT_ERRORS, _ort_message

    pasts = [i for i in session.get_inputs() if i.name.startswith(PAST)]
    names = [o.name for o in session.get_outputs()]
    state: dict[str, np.ndarray] = {}

    def cached(ids: np.ndarray, reset: bool) -> np.ndarray:
        if reset:  # an empty past (1, heads, 0, head size) per kept tensor: the prefill
            state.update({p.name: np.zeros(_empty(p.shape), np.float32) for p in pasts})
        try:
            outs = session.run(names, {x: ids, **state})
        except _ORT_ERRORS as err:
            raise _refused(ids, _ort_message(err)) from None
        present = zip(names, outs, strict=True)
        state.update({n.replace("present.", PAST, 1): v for n, v in present if n != out})
        return outs[names.index(out)][0, -1]

    return cached if pasts else None


PAST = "past."  # the cache inputs of a model compiled with --kv-cache begin so (kvcache.py)


def _empty(shape: list) -> list[int]:
    """A past's dims for a prefill of one sequence: no positions (P), a batch of 1."""
    from dslc.backends.onnx.kvcache import PAST as POSITIONS

    return [0 if d == POSITIONS else d if isinstance(d, int) else 1 for d in shape]


def _lm_signature(path: str, session: Any) -> tuple[Any, Any]:
    """The one (N, T) i64 input and the (N, T, V) logits output of a language model (beside
    the past keys and values of a model with a cache)."""
    inputs = [i for i in session.get_inputs() if not i.name.startswith(PAST)]
    outputs = session.get_outputs()
    shape = "(N, T) int64 token ids in, (N, T, V) logits out"
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise DslcError(
            f"{path} is not a language model: it takes {len(inputs)} inputs ({names}), "
            f"not one: {shape}",
            hint="dslc generate runs the model.onnx of `dslc train --export-onnx` on a spec "
            "with one token input",
        )
    x, out = inputs[0], outputs[0]
    vocab = out.shape[-1] if out.shape else None
    if len(x.shape) != 2 or x.type != "tensor(int64)" or len(out.shape) != 3:
        raise DslcError(f"{path} is not a language model: {shape}")
    if not isinstance(vocab, int) or vocab < 1:
        raise DslcError(f"{path}: the vocabulary (the logits' last dim) is not a fixed number")
    return x, out


def _metadata_context(path: str, session: Any) -> int | None:
    from dslc.runtime.train.export import CONTEXT_KEY

    meta = session.get_modelmeta().custom_metadata_map
    if CONTEXT_KEY not in meta:
        return None
    return check_context(meta[CONTEXT_KEY], f"{path}: metadata {CONTEXT_KEY}")


MAX_CONTEXT = 1 << 20  # tokens in a window: far past any positional table dslc builds


def check_context(value: object, where: str) -> int:
    """A context (from a model's metadata or --context): a whole number from 1 to
    MAX_CONTEXT; a model file could say anything, and "1e9" or "abc" is no context."""
    text = str(value).strip()
    if not text.isdecimal() or not text.isascii():
        raise DslcError(
            f"{where} is {value!r}, not a whole number of tokens",
            hint="give --context N (the positional table's size, e.g. 64)",
        )
    n = int(text)
    if not 1 <= n <= MAX_CONTEXT:
        raise DslcError(
            f"{where} is {n} tokens; dslc takes 1 to {MAX_CONTEXT:,}",
            hint="give --context N (the positional table's size, e.g. 64)",
        )
    return n
