"""Text for a language model (a spec with TOKENS: an integer input read by an embedding):
the text is tokenized (dslc.runtime.train.tokenizer), and the token stream cut into non-overlapping
windows of `context` tokens: input = tokens[i : i+T], target = tokens[i+1 : i+T+1].

The window length is TRAINING["context"], or the input's T when the spec fixes it. With
--val-split the validation text is the END of the file, a contiguous piece held out, not random
windows: windows of one text overlap in content with their neighbours, so random ones would
leak the training text into validation. The BPE tokenizer is trained on the training part only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dslc import untrusted
from dslc.errors import DslcError
from dslc.runtime.train import tokenizer as tok
from dslc.runtime.train.contract import Contract, Signature


@dataclass
class Text:
    """What a language-model run reads: the arrays of each split and the tokenizer."""

    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray] | None
    tokenizer: tok.Tokenizer
    context: int


def is_text(path: str) -> bool:
    return Path(path).suffix.lower() == ".txt"


def load(
    c: Contract,
    data: str,
    val: str | None,
    split: float,
    kind: str | None,
    saved: Path | None = None,
    positions: int | None = None,
) -> Text:
    """The windows of `data` (and of `val`, or of the last `split` of `data`). `saved`: a
    tokenizer.json to reuse (a resumed run) instead of making a new one. `positions`: the
    longest sequence the model takes (`max_positions`)."""
    name, vocab = _token_input(c)
    context = _context(c, positions)
    text, held = _texts(data, val, split)
    kind = kind or c.training.get("tokenizer") or "bytes"
    t = tok.load(saved) if saved is not None else tok.create(kind, text, vocab)
    if t.vocab_size > vocab:
        raise DslcError(
            f"the {t.kind} tokenizer has {t.vocab_size} tokens, "
            f"but input '{name}' embeds only {vocab}",
            hint="give the embedding as many tokens as the tokenizer",
        )
    arrays = windows(t.encode(text), context, data, c)
    val_arrays = windows(t.encode(held), context, val or data, c) if held is not None else None
    return Text(arrays, val_arrays, t, context)


def _texts(data: str, val: str | None, split: float) -> tuple[str, str | None]:
    """The training text and the validation text (None without validation)."""
    text = read(data)
    if val is not None:
        return text, read(val)
    if not split:
        return text, None
    cut = len(text) - int(round(len(text) * split))
    if cut == len(text):
        raise DslcError(
            f"--val-split {split} of {data} holds no text", hint="give a larger fraction"
        )
    return text[:cut], text[cut:]


def _context(c: Contract, positions: int | None) -> int:
    context = context_length(c.training, c.inputs, c.name)
    if positions is not None and context > positions:
        raise DslcError(
            f"windows of {context} tokens (the train section's context) are longer than "
            f"model {c.name}'s positional table of {positions}",
            hint=f"set context = {positions} in the train section, or a longer table",
        )
    return context


def _token_input(c: Contract) -> tuple[str, int]:
    if len(c.tokens) != 1 or len(c.inputs) != 1 or len(c.targets) != 1:
        raise DslcError(
            f"a text file trains a language model: one token input and one target; "
            f"model {c.name} has inputs {', '.join(c.inputs)} and targets {', '.join(c.targets)}",
            hint="use .npz data for other models",
        )
    return next(iter(c.tokens.items()))


def context_length(training: dict, inputs: Signature, model: str) -> int:
    """Tokens per window: TRAINING["context"], else the token input's T when it is a number."""
    context = training.get("context")
    if context is None:
        shape = next(iter(inputs.values()))[1]
        context = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
    if context is None:
        raise DslcError(
            f"model {model} does not say how many tokens a window holds",
            hint="set `context = 64` in the train section, or give the token input a fixed "
            "length (i64[N, 64])",
        )
    return int(context)


def max_positions(graph: Any) -> int | None:
    """The longest sequence the model takes: its smallest positional table (None without)."""
    sizes = [n.attrs["max_len"] for n in graph.nodes if n.op.name == "positional_embedding"]
    return min(sizes, default=None)


def read(path: str) -> str:
    try:
        untrusted.check_size(path, "text")
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DslcError(f"data file {path} does not exist") from None
    except UnicodeDecodeError as err:
        raise DslcError(
            f"{path} is not UTF-8 text: {err}", hint="convert it: iconv -t utf-8 FILE"
        ) from None
    except OSError as err:
        raise DslcError(f"cannot read {path}: {err.strerror}") from None


def windows(tokens: np.ndarray, length: int, source: str, c: Contract) -> dict[str, np.ndarray]:
    """Non-overlapping windows of `length` tokens and their targets, one token further on."""
    count = (tokens.size - 1) // length
    if count < 1:
        raise DslcError(
            f"{source} holds {tokens.size} tokens, too few for one window of {length} "
            f"(context) tokens and the token after it",
            hint="give more text, or a smaller context",
        )
    starts = np.arange(count)[:, None] * length + np.arange(length)[None, :]
    (x,), (y,) = c.inputs, c.targets
    return {x: tokens[starts], y: tokens[starts + 1]}
