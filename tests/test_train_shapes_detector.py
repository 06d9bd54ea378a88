"""The small Faster R-CNN of specs/shapes_detector.dl learns to find drawn shapes: `dslc
train` on 300 images the test draws itself (examples/detection/make_data.py: one to three
squares, circles and triangles per 64x64 image, the shape the class), with torchvision's
losses, reaches a validation mAP@0.5 of at least 0.7 (measured 0.999, mAP@[.5:.95] 0.737,
in 12 epochs, about 1.5 minutes on 2 cores when nothing else runs), and the ONNX model it
exports finds the PyTorch module's detections: the same number per image, boxes to 1e-4."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from detection_data import write_npz

import dslc
from dslc.cli import main
from dslc.runtime.train.checkpoint import load_weights

SPEC = "specs/shapes_detector.dl"
NAMES = ("gt_boxes", "gt_labels")  # the spec's per-object targets


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    train = write_npz(folder / "train.npz", 300, 64, 0, names=NAMES)
    val = write_npz(folder / "val.npz", 60, 64, 1, names=NAMES)
    out = folder / "run"
    args = ["train", SPEC, "--data", str(train), "--val", str(val), "--out", str(out)]
    assert main([*args, "--export-onnx"]) == 0
    return out, val


@pytest.mark.slow
def test_training_reaches_a_validation_map_of_0_7(trained):
    out, _ = trained
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["val_map50"] >= 0.7, last
    assert 0.0 < last["val_map"] <= last["val_map50"]
    assert (out / "detections.png").stat().st_size > 0


@pytest.mark.slow
def test_the_exported_onnx_model_finds_the_same_detections(trained):
    out, val = trained
    spec = dslc.load(SPEC)
    module = spec.torch_module()
    load_weights(module, out / "best.safetensors")
    images = np.load(val)["image"][:8]
    with torch.no_grad():
        expected = dict(
            zip(spec.graph.outputs, module.eval()(torch.from_numpy(images)), strict=True)
        )
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    assert names == ["boxes", "scores", "labels", "images"]  # no training outputs
    got = dict(zip(names, sess.run(names, {"image": images}), strict=True))
    assert len(got["boxes"]) >= 8, "a detection or more per image"
    for name in names:
        assert got[name].shape == tuple(expected[name].shape), name
        np.testing.assert_allclose(got[name], expected[name].numpy(), rtol=0, atol=1e-4)
