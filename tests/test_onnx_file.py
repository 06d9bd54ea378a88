"""dslc/backends/onnx_file.py: a model written by streaming its weights is the model that
protobuf's own serialization gives, in one self-contained file."""

from __future__ import annotations

import onnx
import pytest
from conftest import ROOT

import dslc
from dslc.backends.onnx import file as onnx_file


@pytest.mark.parametrize("name", ["lenet5", "tiny_unet", "vae"])
def test_the_streamed_file_is_the_model(tmp_path, name):
    spec = dslc.load(ROOT / "specs" / f"{name}.dl")
    export = spec.onnx_export(seed=3)
    assert export.large, "the spec should have initializers above the small-tensor limit"
    size = export.write(tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no external data
    loaded = onnx.load(tmp_path / "m.onnx")
    whole = export.model()
    assert loaded == whole
    assert size == (tmp_path / "m.onnx").stat().st_size == len(whole.SerializeToString())
    onnx.checker.check_model(loaded, full_check=True)


def test_the_check_sees_a_broken_graph():
    export = dslc.load(ROOT / "specs/lenet5.dl").onnx_export()
    export.skeleton.graph.node[0].input[0] = "nowhere"
    with pytest.raises(onnx.checker.ValidationError, match="nowhere"):
        onnx_file.check(export.skeleton, export.large)
