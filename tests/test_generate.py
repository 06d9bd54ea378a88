"""dslc generate: the sampler, the same text from the checkpoint (PyTorch) and from model.onnx
(onnxruntime) for the same seed, greedy and sampled, and the errors: a missing tokenizer, a
tokenizer larger than the model's vocabulary, a model that does not say its context."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import GPT_PARAMS, ROOT
from test_train_data import one_thread  # noqa: F401  (autouse: one torch thread)

from dslc.cli import main
from dslc.runtime.generate import Options, generate, onnx_model, sample, torch_model

GPT = str(ROOT / "specs/tiny_gpt.dl")
PARAMS = {"width": 32, "layers": 1}


def test_sample_greedy_top_k_and_seed():
    logits = np.array([0.1, 2.0, -1.0, 1.9], dtype=np.float32)
    rng = np.random.default_rng(0)
    assert sample(logits, 0.0, 0, rng) == 1
    assert {sample(logits, 1.0, 1, rng) for _ in range(20)} == {1}  # top-1 is greedy
    assert {sample(logits, 5.0, 2, rng) for _ in range(200)} == {1, 3}
    draws = [[sample(logits, 1.0, 0, np.random.default_rng(s)) for _ in range(3)] for s in (7, 7)]
    assert draws[0] == draws[1]


def test_sample_follows_the_softmax():
    logits = np.log(np.array([0.7, 0.2, 0.1]))
    rng = np.random.default_rng(1)
    counts = np.bincount([sample(logits, 1.0, 0, rng) for _ in range(4000)], minlength=3)
    np.testing.assert_allclose(counts / 4000, [0.7, 0.2, 0.1], atol=0.03)


@pytest.fixture(scope="module")
def models(gpt_run):
    return torch_model(GPT, str(gpt_run / "best.safetensors"), PARAMS), onnx_model(
        str(gpt_run / "model.onnx")
    )


def test_both_runtimes_know_vocabulary_and_context(models):
    torch_m, onnx_m = models
    assert (torch_m.vocab, torch_m.context) == (onnx_m.vocab, onnx_m.context) == (256, 64)


@pytest.mark.parametrize(
    "temperature, top_k, seed", [(0.0, 0, 0), (1.0, 0, 0), (1.0, 0, 1), (0.8, 10, 2)]
)
def test_checkpoint_and_onnx_generate_the_same_tokens(models, temperature, top_k, seed):
    """Greedy and sampled: 100 tokens, the window sliding past the 64-token context."""
    start = list(b"The spec ")
    o = Options(max_new_tokens=100, temperature=temperature, top_k=top_k, seed=seed)
    a, b = (generate(m, start, 64, o) for m in models)
    assert a == b
    assert len(a) == len(start) + 100


def cli(*args: str) -> int:
    return main(["generate", *args])


def test_cli_prints_prompt_and_text_from_either(gpt_run, capsys):
    weights = ["--weights", str(gpt_run / "best.safetensors"), *GPT_PARAMS]
    common = ["--prompt", "The model ", "--max-new-tokens", "40", "--seed", "3"]
    assert cli(GPT, *weights, *common) == 0
    from_torch = capsys.readouterr().out
    assert cli("--onnx", str(gpt_run / "model.onnx"), *common) == 0
    assert capsys.readouterr().out == from_torch
    assert from_torch.startswith("The model ") and len(from_torch) > len("The model ")


def test_empty_prompt_starts_from_a_newline_not_printed(gpt_run, capsys):
    args = ["--onnx", str(gpt_run / "model.onnx"), "--max-new-tokens", "5", "--temperature", "0"]
    assert cli(*args) == 0
    out = capsys.readouterr().out
    assert len(out.encode()) == 5 + 1  # five byte tokens (ASCII here) and print's newline


def test_missing_tokenizer(gpt_run, tmp_path, capsys):
    shutil.copy(gpt_run / "model.onnx", tmp_path / "model.onnx")
    assert cli("--onnx", str(tmp_path / "model.onnx")) == 1
    err = capsys.readouterr().err
    assert f"no tokenizer at {tmp_path / 'tokenizer.json'}" in err and "--tokenizer PATH" in err


def test_tokenizer_larger_than_the_vocabulary(gpt_run, tmp_path, capsys):
    from conftest import docs_text

    from dslc.runtime.train import tokenizer

    tokenizer.save(tokenizer.train_bpe(docs_text(20_000), 300), tmp_path / "bpe.json")
    args = ["--onnx", str(gpt_run / "model.onnx"), "--tokenizer", str(tmp_path / "bpe.json")]
    assert cli(*args) == 1
    assert "the bpe tokenizer has 300 tokens, but the model knows 256" in capsys.readouterr().err


def test_onnx_without_context(gpt_run, tmp_path, capsys):
    """A model compiled by `dslc compile` carries no dslc.context; --context supplies it."""
    onnx_path = tmp_path / "gpt.onnx"
    weights = str(gpt_run / "best.safetensors")
    argv = ["compile", GPT, *GPT_PARAMS, "--target", "onnx", "--weights", weights]
    assert main([*argv, "-o", str(onnx_path)]) == 0
    shutil.copy(gpt_run / "tokenizer.json", tmp_path / "tokenizer.json")
    assert cli("--onnx", str(onnx_path)) == 1
    assert "--context N" in capsys.readouterr().err
    assert cli("--onnx", str(onnx_path), "--context", "64", "--max-new-tokens", "3") == 0


def test_a_context_longer_than_the_positional_table(gpt_run, capsys):
    common = ["--context", "100", "--max-new-tokens", "40", "--prompt", "x" * 80]
    weights = ["--weights", str(gpt_run / "best.safetensors"), *GPT_PARAMS]
    for args in ([GPT, *weights], ["--onnx", str(gpt_run / "model.onnx")]):
        assert cli(*args, *common) == 1
        assert "the model refused a window of 80 tokens" in capsys.readouterr().err


def test_spec_and_onnx_are_exclusive(gpt_run, capsys):
    assert cli(GPT, "--onnx", str(gpt_run / "model.onnx")) == 1
    assert "not both" in capsys.readouterr().err
    assert cli(GPT) == 1
    assert "needs a spec and its --weights, or --onnx" in capsys.readouterr().err


def test_generating_from_onnx_does_not_import_torch(gpt_run):
    """Like `dslc compile --target onnx`: a deployed model.onnx needs no PyTorch install."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; from dslc.cli import main; "
        f"rc = main(['generate', '--onnx', r'{gpt_run / 'model.onnx'}', '--max-new-tokens', '3']); "
        "assert rc == 0; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()


def test_train_exports_a_cached_decoder_that_generates_the_same_text(gpt_run, capsys):
    """`dslc train --export-onnx` of a language model also writes decoder.onnx, the decoder with
    a key/value cache (as `dslc compile --kv-cache` writes it), which knows its context: the
    same text as model.onnx, which recomputes the window."""
    common = ["--prompt", "The model ", "--max-new-tokens", "40", "--seed", "3"]
    assert cli("--onnx", str(gpt_run / "decoder.onnx"), *common) == 0
    from_decoder = capsys.readouterr().out
    assert cli("--onnx", str(gpt_run / "model.onnx"), *common) == 0
    assert capsys.readouterr().out == from_decoder
    inputs = [i.name for i in ort_inputs(gpt_run / "decoder.onnx")]
    assert any(name.startswith("past") for name in inputs), inputs


def ort_inputs(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()
