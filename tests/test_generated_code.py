"""The generated PyTorch is code we sign: every golden model.py passes ruff (the rules of
pyproject's generated-code check plus pep8-naming and builtins), is formatted as ruff formats
it, and meets the readability budgets of the layout issue: one class per block, used in loops."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

GOLDEN = sorted((ROOT / "tests" / "golden").glob("*/model.py"))


def _ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    cmd = [exe, *args, "--no-cache", "--isolated", "--line-length", "100"]
    return subprocess.run([*cmd, *map(str, GOLDEN)], capture_output=True, text=True)


def test_generated_modules_pass_ruff_check() -> None:
    result = _ruff("check", "--select", "E,F,W,B,A,N,UP")
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_modules_are_ruff_formatted() -> None:
    result = _ruff("format", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def _model_code(name: str) -> list[str]:
    """The module without its training factories (create_model and what follows)."""
    text = (ROOT / "tests" / "golden" / name / "model.py").read_text()
    return text[: text.index("def create_model")].rstrip("\n").split("\n")


def test_resnet50_model_code_fits_the_budget() -> None:
    lines = _model_code("resnet50")
    assert len(lines) <= 150, len(lines)
    text = "\n".join(lines)
    assert text.count("class Bottleneck(nn.Module)") == 1
    assert text.count("nn.init.kaiming_normal_") == 1  # one loop over self.modules()


def test_googlenet_inception_is_one_class_used_nine_times() -> None:
    text = "\n".join(_model_code("googlenet"))
    assert text.count("class Inception(nn.Module)") == 1
    assert len(re.findall(r"= Inception\(", text)) == 9


def test_tiny_gpt_block_is_one_class_used_in_a_loop() -> None:
    text = "\n".join(_model_code("tiny_gpt"))
    assert text.count("class Block(nn.Module)") == 1
    assert "nn.ModuleList([Block(64, 4, 0.0) for _ in range(2)])" in text
    assert "for block in self.blocks:" in text


def test_no_line_longer_than_100_columns() -> None:
    long = [
        f"{p.parent.name}:{i + 1}"
        for p in GOLDEN
        for i, line in enumerate(p.read_text().split("\n"))
        if len(line) > 100
    ]
    assert not long, long


def test_a_repeated_stages_input_read_after_it_is_its_own() -> None:
    """`a = x -> linear(8) * 2` then `a + x`: the loop carries its own variable, and after it
    x is still x (it was read as the loop's variable, `a + a`). Both backends agree."""
    import numpy as np
    import onnxruntime as ort
    import torch

    import dslc

    spec = dslc.compile_source(
        "model M { input x: f32[N, 8]  a = x -> linear(8) * 2  output y = a + x }"
    )
    source = spec.torch_source()
    assert "y = a + x" in source, source
    torch.manual_seed(0)
    module = spec.torch_module().eval()
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    weights = {k: v.numpy() for k, v in module.state_dict().items()}
    session = ort.InferenceSession(
        spec.onnx_model(weights=weights).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(session.run(None, {"x": x})[0], want, atol=1e-5)
