"""Golden files: what each spec in specs/ compiles to, in text form (IR, PyTorch, ONNX)."""

from __future__ import annotations

import pytest
from conftest import ROOT, SPECS, check_golden

import dslc
from dslc.backends.onnx.model import to_text


@pytest.fixture(params=SPECS, ids=lambda p: p.stem)
def spec(request, monkeypatch):
    monkeypatch.chdir(ROOT)  # paths in the outputs are relative to the repository
    return dslc.load(request.param.relative_to(ROOT))


def test_ir(spec, update_golden):
    check_golden(
        ROOT / "tests/golden" / spec.graph.path[6:-3] / "model.ir", spec.ir_text(), update_golden
    )


def test_torch(spec, update_golden):
    check_golden(
        ROOT / "tests/golden" / spec.graph.path[6:-3] / "model.py",
        spec.torch_source(),
        update_golden,
    )


def test_onnx(spec, update_golden):
    text = to_text(spec.onnx_export(seed=0).skeleton)  # initializers print as their types
    check_golden(
        ROOT / "tests/golden" / spec.graph.path[6:-3] / "model.onnx.txt", text, update_golden
    )


def test_onnx_decomposed(spec, update_golden):
    """Specs whose ops have a fused ONNX form (attention, layer and RMS norm, GELU) keep the
    decomposed graph (dslc compile --decompose) beside it."""
    text = to_text(spec.onnx_export(seed=0, fused=False).skeleton)
    path = ROOT / "tests/golden" / spec.graph.path[6:-3] / "model.decomposed.onnx.txt"
    if text == to_text(spec.onnx_export(seed=0).skeleton):
        assert not path.exists(), f"{path.name}: the graph no longer differs from model.onnx.txt"
    else:
        check_golden(path, text, update_golden)


def test_summary(spec, update_golden):
    check_golden(
        ROOT / "tests/golden" / spec.graph.path[6:-3] / "summary.txt", spec.summary(), update_golden
    )


def test_every_spec_has_goldens():
    # tests/golden/torchvision holds reference key lists (test_reference.py), not a spec's goldens.
    on_disk = {p.name for p in (ROOT / "tests/golden").iterdir() if p.is_dir()} - {"torchvision"}
    assert on_disk == {p.stem for p in SPECS}, "goldens without a spec, or a spec without goldens"
