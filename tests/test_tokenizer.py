"""Tokenizers: bytes round-trip any text, BPE (HuggingFace tokenizers) round-trips, has the asked
vocabulary and is trained deterministically, and tokenizer.json tells the two apart."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, docs_text

from dslc.errors import DslcError
from dslc.runtime.train import tokenizer as tok

SAMPLE = "Grüße, 世界! naïve café 🎉\n\ttabs  and  spaces\r\nend"


def test_bytes_round_trip_including_non_ascii():
    t = tok.ByteTokenizer()
    ids = t.encode(SAMPLE)
    assert ids.dtype.kind == "i" and ids.max() < 256
    assert bytes(ids.tolist()) == SAMPLE.encode("utf-8")
    assert t.decode(ids) == SAMPLE


def test_bytes_decode_replaces_what_is_not_utf8():
    """A model may emit half of a multi-byte character; decoding must not fail."""
    assert tok.ByteTokenizer().decode([104, 0xC3, 105]) == "h\ufffdi"


@pytest.fixture(scope="module")
def bpe():
    return tok.train_bpe(docs_text(40_000), 400)


def test_bpe_round_trip_and_vocab_size(bpe):
    assert bpe.vocab_size == 400
    for text in (SAMPLE, docs_text(3000), ""):
        ids = bpe.encode(text)
        assert ids.max(initial=0) < 400
        assert bpe.decode(ids) == text
    assert len(bpe.encode(docs_text(3000))) < 3000 * 0.6  # merges shorten the text


def test_bpe_is_deterministic_across_processes(bpe, tmp_path):
    """Training on the same text gives the same file, also in another process (another hash
    seed, other thread timings)."""
    assert tok.train_bpe(docs_text(40_000), 400).to_json() == bpe.to_json()
    code = (
        "import sys; sys.path.insert(0, 'tests'); from conftest import docs_text; "
        "from dslc.runtime.train import tokenizer as t; "
        "sys.stdout.write(t.train_bpe(docs_text(40_000), 400).to_json())"
    )
    env = {"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "7", "RAYON_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout == bpe.to_json()


def test_save_and_load_detect_the_kind(bpe, tmp_path):
    tok.save(tok.ByteTokenizer(), tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text()) == {
        "dslc_tokenizer": "bytes",
        "vocab_size": 256,
    }
    assert tok.load(tmp_path / "b.json").kind == "bytes"
    tok.save(bpe, tmp_path / "h.json")
    loaded = tok.load(tmp_path / "h.json")
    assert loaded.kind == "bpe" and loaded.vocab_size == 400
    assert loaded.encode(SAMPLE).tolist() == bpe.encode(SAMPLE).tolist()


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(DslcError, match="no tokenizer at"):
        tok.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text('{"vocab": [1, 2]}')
    with pytest.raises(DslcError, match="is not a tokenizer.json"):
        tok.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{not json")
    with pytest.raises(DslcError, match="cannot read tokenizer"):
        tok.load(tmp_path / "y.json")


def test_vocabulary_sizes_that_cannot_work():
    with pytest.raises(DslcError, match="more than 256 tokens") as err:
        tok.create("bpe", "some text", 256)
    assert "--tokenizer bytes" in (err.value.hint or "")
    with pytest.raises(DslcError, match="embeds only 100 tokens"):
        tok.create("bytes", "some text", 100)
