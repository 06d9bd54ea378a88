"""dslc train on text: specs/tiny_gpt.dl learns the repository's docs (the loss drops), the run
holds tokenizer.json and an ONNX model that knows its context, tied weights are stored once,
validation is the end of the text, and the errors around vocabularies and context."""

from __future__ import annotations

import json

import numpy as np
import onnx
from conftest import GPT_PARAMS, ROOT, docs_text
from safetensors.numpy import load_file
from test_train_data import one_thread  # noqa: F401  (autouse: one torch thread)

import dslc
from dslc.cli import main
from dslc.runtime.train import text, tokenizer
from dslc.runtime.train.contract import contract

GPT = str(ROOT / "specs/tiny_gpt.dl")


def train(tmp_path, data: str, *extra: str, spec: str = GPT) -> int:
    return main(["train", spec, "--data", data, "--out", str(tmp_path / "run"), *extra])


def test_tiny_gpt_learns_the_docs(gpt_run):
    rows = [json.loads(line) for line in (gpt_run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert rows[-1]["train_loss"] < 0.8 * rows[0]["train_loss"]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]


def test_the_run_holds_the_tokenizer_and_the_context(gpt_run):
    assert tokenizer.load(gpt_run / "tokenizer.json").kind == "bytes"  # the spec's setting
    meta = {p.key: p.value for p in onnx.load(str(gpt_run / "model.onnx")).metadata_props}
    assert meta["dslc.context"] == "64"


def test_tied_weights_are_stored_once(gpt_run):
    """The output head shares the embedding (safetensors refuses shared tensors): the file
    holds the owner only, and compiling to ONNX with it works."""
    weights = load_file(str(gpt_run / "best.safetensors"))
    assert "embed1.weight" in weights and "fc1.weight" not in weights
    spec = dslc.load(GPT, {"width": 32, "layers": 1})
    assert spec.graph.ties() == {"fc1.weight": "embed1.weight"}
    assert spec.onnx_model(weights=gpt_run / "best.safetensors") is not None


def test_val_split_holds_out_the_end_of_the_text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 100)  # 1000 bytes
    c = contract(dslc.load(GPT, {"context": 8}))
    c.training["context"] = 8
    t = text.load(c, str(path), None, 0.2, None)
    raw = np.frombuffer(path.read_bytes(), np.uint8).astype(np.int64)
    assert t.context == 8 and t.train["tokens"].shape == (99, 8)  # (800 - 1) // 8
    np.testing.assert_array_equal(t.train["next"][0], raw[1:9])
    np.testing.assert_array_equal(t.val["tokens"][0], raw[800:808])  # the last 200 bytes
    np.testing.assert_array_equal(t.val["next"][-1], raw[800 + 23 * 8 + 1 : 800 + 24 * 8 + 1])


def test_bpe_run_saves_a_huggingface_tokenizer(tmp_path):
    (tmp_path / "d.txt").write_text(docs_text(20_000))
    extra = ["--tokenizer", "bpe", "--param", "vocab=320", "--epochs", "2", *GPT_PARAMS]
    assert train(tmp_path, str(tmp_path / "d.txt"), *extra) == 0
    saved = json.loads((tmp_path / "run" / "tokenizer.json").read_text())
    assert saved["model"]["type"] == "BPE" and len(saved["model"]["vocab"]) == 320


def test_a_byte_model_needs_256_embeddings(tmp_path, capsys):
    (tmp_path / "d.txt").write_text(docs_text(5000))
    assert train(tmp_path, str(tmp_path / "d.txt"), "--param", "vocab=100") == 1
    err = capsys.readouterr().err
    assert "the byte tokenizer gives ids 0..255, but the model embeds only 100" in err
    assert "hint:" in err


def test_bpe_needs_more_than_the_bytes(tmp_path, capsys):
    (tmp_path / "d.txt").write_text(docs_text(5000))
    assert train(tmp_path, str(tmp_path / "d.txt"), "--tokenizer", "bpe") == 1
    assert "a BPE tokenizer needs more than 256 tokens" in capsys.readouterr().err


def test_a_model_without_context(tmp_path, capsys):
    source = (ROOT / "specs/tiny_gpt.dl").read_text()
    assert "context = context " in source
    source = "\n".join(x for x in source.split("\n") if "context = context" not in x)
    (tmp_path / "gpt.dl").write_text(source)
    (tmp_path / "d.txt").write_text(docs_text(5000))
    assert train(tmp_path, str(tmp_path / "d.txt"), spec=str(tmp_path / "gpt.dl")) == 1
    err = capsys.readouterr().err
    assert "does not say how many tokens a window holds" in err and "context = 64" in err


def test_windows_longer_than_the_positional_table(tmp_path, capsys):
    source = (
        (ROOT / "specs/tiny_gpt.dl").read_text().replace("context = context ", "context = 128 ")
    )
    (tmp_path / "gpt.dl").write_text(source)
    (tmp_path / "d.txt").write_text(docs_text(5000))
    assert train(tmp_path, str(tmp_path / "d.txt"), spec=str(tmp_path / "gpt.dl")) == 1
    err = capsys.readouterr().err
    assert "longer than model TinyGpt's positional table of 64" in err
    assert "set context = 64 in the train section" in err


def test_the_context_parameter_moves_the_windows_with_the_table(tmp_path):
    """tiny_gpt says `context = context`: --param context=32 trains on 32-token windows."""
    (tmp_path / "d.txt").write_text(docs_text(5000))
    assert train(tmp_path, str(tmp_path / "d.txt"), "--param", "context=32") == 0


def test_text_too_short_for_a_window(tmp_path, capsys):
    (tmp_path / "d.txt").write_text("short")
    assert train(tmp_path, str(tmp_path / "d.txt"), "--val-split", "0") == 1
    assert "too few for one window of 64" in capsys.readouterr().err


def test_tokenizer_flag_needs_a_language_model(tmp_path, capsys):
    from test_train_data import write_tiny

    spec, data, _ = write_tiny(tmp_path)
    assert train(tmp_path, data, "--tokenizer", "bpe", spec=spec) == 1
    assert "--tokenizer applies to language models" in capsys.readouterr().err
