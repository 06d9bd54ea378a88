"""Tokenizers for language models: text to token ids and back, saved as one tokenizer.json.

- `bytes`: built in; the ids are the text's UTF-8 bytes (256 of them). Decoding replaces a byte
  sequence that is not UTF-8 (a model can emit one) with U+FFFD rather than failing.
- `bpe`: byte-level byte-pair encoding, as GPT-2's, trained on the training text by the
  HuggingFace `tokenizers` library (Rust; a BPE of our own would be slower and easier to get
  wrong). Its alphabet is the 256 bytes, so any text encodes and decodes back exactly.

tokenizer.json is HuggingFace's own JSON for bpe (loadable by `tokenizers.Tokenizer.from_file`),
and `{"dslc_tokenizer": "bytes", "vocab_size": 256}` for bytes; `load` tells them apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dslc import untrusted
from dslc.errors import DslcError

KINDS = ("bytes", "bpe")
FILE = "tokenizer.json"
BYTES = 256
SPECIAL: tuple[str, ...] = ()  # no special tokens: plain text has no document boundaries


class Tokenizer(Protocol):
    kind: str
    vocab_size: int

    def encode(self, text: str) -> np.ndarray: ...
    def decode(self, ids: Any) -> str: ...
    def to_json(self) -> str: ...


class ByteTokenizer:
    kind = "bytes"
    vocab_size = BYTES

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int64)

    def decode(self, ids: Any) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def to_json(self) -> str:
        return json.dumps({"dslc_tokenizer": "bytes", "vocab_size": BYTES}) + "\n"


class BpeTokenizer:
    kind = "bpe"

    def __init__(self, hf: Any) -> None:
        self.hf = hf
        self.vocab_size = hf.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.hf.encode(text).ids, dtype=np.int64)

    def decode(self, ids: Any) -> str:
        return self.hf.decode([int(i) for i in ids])

    def to_json(self) -> str:
        return self.hf.to_str(pretty=True) + "\n"


def train_bpe(text: str, vocab_size: int) -> BpeTokenizer:
    """Byte-level BPE with `vocab_size` tokens (the 256 bytes and the merges) learned from
    `text`. Deterministic: the trainer has no randomness, and its hash-map order only matters
    for continuing-subword prefixes (huggingface/tokenizers#1794), which byte-level BPE does
    not use; so the same text gives the same file (tests/test_tokenizer.py checks it)."""
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size <= BYTES + len(SPECIAL):
        raise DslcError(
            f"a BPE tokenizer needs more than {BYTES + len(SPECIAL)} tokens (the 256 bytes), "
            f"but the model embeds {vocab_size}",
            hint="raise the embedding's vocabulary (e.g. --param vocab=1024), or use "
            "--tokenizer bytes",
        )
    hf = HfTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,  # a pair seen once is no pattern; merging it wastes a token
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(SPECIAL),
    )
    hf.train_from_iterator([text], trainer=trainer)
    return BpeTokenizer(hf)


def create(kind: str, text: str, vocab_size: int) -> Tokenizer:
    """The tokenizer of `kind` for a model that embeds `vocab_size` token ids."""
    if kind == "bpe":
        return train_bpe(text, vocab_size)
    if kind != "bytes":
        raise DslcError(f"unknown tokenizer '{kind}'", hint=f"one of {', '.join(KINDS)}")
    if vocab_size < BYTES:
        raise DslcError(
            f"the byte tokenizer gives ids 0..255, but the model embeds only {vocab_size} tokens",
            hint="give the embedding 256 tokens (e.g. --param vocab=256), or use --tokenizer bpe",
        )
    return ByteTokenizer()


def save(tokenizer: Tokenizer, path: Path) -> None:
    from dslc.runtime.train.checkpoint import atomic_write

    text = tokenizer.to_json()
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load(path: Path) -> Tokenizer:
    """The tokenizer saved in `path`: dslc's byte tokenizer or a HuggingFace tokenizer.json.
    Its size is checked before it is read, and JSON nested too deep for Python's parser is
    refused, not a crash."""
    try:
        untrusted.check_size(path, "tokenizer")
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except RecursionError:
        raise DslcError(
            f"cannot read tokenizer {path}: its JSON is nested too deeply to parse",
            hint="a tokenizer.json nests a few levels; this file is not one",
        ) from None
    except FileNotFoundError:
        raise DslcError(
            f"no tokenizer at {path}",
            hint="dslc train writes tokenizer.json into the run directory; "
            "name another with --tokenizer PATH",
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DslcError(f"cannot read tokenizer {path}: {err}") from None
    if isinstance(data, dict) and data.get("dslc_tokenizer") == "bytes":
        return ByteTokenizer()
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return _hf(path, text)
    raise DslcError(f"{path} is not a tokenizer.json (dslc's byte tokenizer or HuggingFace's)")


def _hf(path: Path, text: str) -> BpeTokenizer:
    from tokenizers import Tokenizer as HfTokenizer

    try:
        return BpeTokenizer(HfTokenizer.from_str(text))
    except Exception as err:  # tokenizers raises a bare Exception for a malformed file
        raise DslcError(f"cannot load tokenizer {path}: {err}") from None
