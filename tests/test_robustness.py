"""Inputs found by fuzzing that once crashed dslc (exit 2): each is now a clean user error or a
correct compile. The spec-level ones live in tests/errors/; these need more than `dslc check`."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

import dslc
from dslc.cli import main
from dslc.runtime.parity import max_abs_diff


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_python_keywords_as_spec_names_give_valid_python():
    spec = dslc.compile_source(
        "model M { input x: f32[N, 4]  output self = x -> linear(2) }\n"
        "train { target lambda: f32[N, 2]  loss = mse(self, lambda)  optimizer = sgd(lr=0.1) }"
    )
    ns = spec.torch_namespace()  # compiles: no 'def forward(self, self, lambda)'
    assert ns["create_loss"]() is not None


def test_a_very_long_pipeline_is_a_user_error(tmp_path, capsys):
    spec = tmp_path / "long.dl"
    spec.write_text("model M { input x: f32[N, 4]  output y = x" + " -> relu" * 3000 + " }")
    assert main(["check", str(spec)]) == 1
    assert "nests expressions or pipelines too deeply" in capsys.readouterr().err


def test_bf16_is_refused_for_onnx_with_a_message(tmp_path, capsys):
    spec = tmp_path / "bf.dl"
    spec.write_text("model M { input x: bf16[N, 3, 8, 8]  output y = x -> max_pool2d(2) }")
    assert main(["check", str(spec)]) == 0
    assert main(["compile", str(spec), "--target", "onnx", "-o", str(tmp_path / "m.onnx")]) == 1
    assert "bf16, which dslc does not export to ONNX yet" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["compile", "specs/lenet5.dl", "--target", "onnx", "--seed", "-1"],
        ["verify", "specs/lenet5.dl", "--batch-sizes", "a"],
        ["verify", "specs/lenet5.dl", "--batch-sizes", "0"],
        ["verify", "specs/lenet5.dl", "--atol", "nan"],
        ["verify", "specs/lenet5.dl", "--out", "/proc/no/such/dir"],
        ["check", "specs/lenet5.dl", "--param", "classes=3", "--param", "classes=4"],
    ],
)
def test_bad_arguments_exit_1(args):
    try:
        code = main(args)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    assert code == 1


def test_max_abs_diff_treats_nan_and_infinity_honestly():
    inf, nan = np.inf, np.nan
    assert max_abs_diff(np.array([inf, nan, 1.0]), np.array([inf, nan, 1.5])) == 0.5
    assert (
        max_abs_diff(np.array([nan]), np.array([1.0])) == inf
    )  # NaN on one side is a disagreement
    assert max_abs_diff(np.array([inf]), np.array([-inf])) == inf


def test_verify_reports_pytorch_failures_as_user_errors(tmp_path, capsys):
    spec = tmp_path / "k.dl"  # stride 100 over H = W = 32 (verify's size) leaves 1x1 to pool
    body = "x -> conv2d(3, 3, stride=100) -> max_pool2d(2)"
    spec.write_text(f"model M {{ input x: f32[N, 3, H, W]  output y = {body} }}")
    assert main(["verify", str(spec)]) == 1
    assert "the PyTorch module failed on random inputs" in capsys.readouterr().err


def test_a_byte_order_mark_is_not_code(tmp_path):
    spec = tmp_path / "bom.dl"
    spec.write_bytes("\ufeffmodel M { input x: f32[N, 2]  output y = x -> relu }".encode())
    assert dslc.load(spec).name == "M"
