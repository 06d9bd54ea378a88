"""bench/detection.py runs: its smallest case (specs/shapes_detector.dl) end to end, once, with
the fewest repeats. What it asserts is behaviour, not speed: the weights it makes detect
something without saturating on every box, both backends return the same detections' count,
and the export's outcome is recorded either way (a file that runs, or the exporter's error)."""

from __future__ import annotations

import argparse
import sys

import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import detection  # noqa: E402
import report  # noqa: E402


def test_the_weights_detect_in_both_backends():
    """Random weights score the shapes detector's boxes alike; the fitted ones give detections
    whose scores spread (not all equal), in PyTorch and onnxruntime alike."""
    case = detection.CASES["shapes_detector"]
    weights = detection.detecting_weights(case, detection.images(2, case.size, seed=1))
    spec = detection.dslc.load(case.spec, {"size": case.size})
    model = spec.torch_module().eval()
    model.load_state_dict(weights)
    x = detection.images(2, case.size, seed=2)
    with torch.no_grad():
        boxes, scores, labels, images = model(x)[:4]
    assert len(boxes) > 0 and scores.std() > 0.01
    assert set(images.tolist()) == {0, 1}, "detections in each image"
    import onnxruntime as ort

    sess = ort.InferenceSession(
        spec.onnx_model(weights=weights).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    got = sess.run(detection.SERVED, {"image": x.numpy()})
    assert got[0].shape == tuple(boxes.shape)
    assert (got[2] == labels.numpy()).all() and (got[3] == images.numpy()).all()


def test_smallest_case_runs_and_renders(tmp_path):
    args = argparse.Namespace(repeats=1, budget=0.01, timeout=240.0)
    case = detection.CASES["shapes_detector"]
    result = detection.run_case("shapes_detector", case, tmp_path / "case", args)
    assert result["params"] == detection.dslc.load(case.spec).graph.param_count()
    assert result["file"]["op_counts"]["NonMaxSuppression"] >= 1
    for timing in result["latency"].values():
        ort_count, torch_count = timing["detections"]
        assert ort_count == torch_count > 0
    script = result["export"]["torchscript"]
    assert script["exported"] or script["error"], "an outcome either way"
    data = {"machine": {"load_end": 0.0} | detection.common.machine(), "repeats": 1}
    text = report.detection(data | {"results": {"shapes_detector": result}})
    assert f"| shapes_detector | 64x64 | {result['params']:,} |" in text
