"""The standalone box ops (dslc/ops/boxes.py, nms.py, select.py) against independent code:
box_decode and box_encode against torchvision's BoxCoder (pure Python), box_iou against
torchvision.ops.box_iou (pure Python), nms against torchvision's batched_nms with its C++ NMS
kernel replaced by tests/detection_reference.py's reference_nms (written in the test from
greedy NMS's definition, float64), and torchvision's users' score threshold and top-k applied
around it; topk against a NumPy stable sort (ties by index) and torch.topk's values; gather
against numpy.take (ONNX Gather's meaning). Each op's PyTorch module (the source dslc emits)
and its ONNX graph in onnxruntime get the same inputs, and must agree."""

from __future__ import annotations

import importlib

import numpy as np
import onnxruntime as ort
import pytest
import torch
from detection_reference import detection_package

import dslc


def both(source: str, inputs: dict[str, np.ndarray]) -> tuple[list, list]:
    """The outputs of the spec's PyTorch module and of its ONNX graph, as NumPy arrays."""
    spec = dslc.compile_source(source)
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    with torch.no_grad():
        got = model(*(torch.from_numpy(a) for a in inputs.values()))
    got = [t.numpy() for t in (got if isinstance(got, tuple) else (got,))]
    onnx_model = spec.onnx_model(weights=model.state_dict())
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    return got, sess.run(None, inputs)


def random_boxes(rng: np.random.Generator, n: int, spread: float = 40.0) -> np.ndarray:
    """n valid boxes (x1 < x2, y1 < y2) that overlap often."""
    corner = rng.uniform(0, spread, (n, 2))
    sides = rng.uniform(2, 30, (n, 2))
    return np.concatenate([corner, corner + sides], axis=1).astype(np.float32)


def box_coder(weights):
    detection_package()
    utils = importlib.import_module("torchvision.models.detection._utils")
    return utils.BoxCoder(weights)


# ---- box_decode, box_encode, box_iou


def test_box_decode_matches_box_coder_with_clipping_and_broadcasting():
    rng = np.random.default_rng(0)
    anchors = random_boxes(rng, 9)
    deltas = rng.normal(0, 1, (5, 9, 4)).astype(np.float32)
    deltas[0, :3, 2:] = 60.0  # exp would overflow: bbox_xform_clip bounds it
    source = """
model Decode {
    input deltas: f32[N, 9, 4]
    input anchors: f32[9, 4]
    output boxes = box_decode(deltas, anchors, weights=[10, 10, 5, 5])
}
"""
    (got,), (onnx_got,) = both(source, {"deltas": deltas, "anchors": anchors})
    coder = box_coder((10.0, 10.0, 5.0, 5.0))
    expected = coder.decode_single(
        torch.from_numpy(deltas.reshape(-1, 4)), torch.from_numpy(np.tile(anchors, (5, 1)))
    ).reshape(5, 9, 4)
    assert got.shape == (5, 9, 4)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(onnx_got, got, rtol=1e-6, atol=1e-4)
    assert np.isfinite(got).all()


def test_box_encode_matches_box_coder_and_inverts_decode():
    rng = np.random.default_rng(1)
    anchors, gt = random_boxes(rng, 50), random_boxes(rng, 50)
    source = """
model Encode {
    input gt: f32[N, 4]
    input anchors: f32[N, 4]
    deltas = box_encode(gt, anchors, weights=[10, 10, 5, 5])
    output deltas
    output again = box_decode(deltas, anchors, weights=[10, 10, 5, 5])
}
"""
    (deltas, again), (onnx_deltas, onnx_again) = both(source, {"gt": gt, "anchors": anchors})
    coder = box_coder((10.0, 10.0, 5.0, 5.0))
    expected = coder.encode_single(torch.from_numpy(gt), torch.from_numpy(anchors)).numpy()
    np.testing.assert_allclose(deltas, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(onnx_deltas, deltas, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(again, gt, atol=1e-3)
    np.testing.assert_allclose(onnx_again, again, atol=1e-4)


def test_box_iou_matches_torchvision_box_iou():
    detection_package()
    boxes_module = importlib.import_module("torchvision.ops.boxes")
    rng = np.random.default_rng(2)
    a, b = random_boxes(rng, 13), random_boxes(rng, 21)
    b[0] = a[0]  # IoU 1
    b[1] = a[1] + 500.0  # IoU 0
    source = """
model Iou {
    input a: f32[M, 4]
    input b: f32[K, 4]
    output iou = box_iou(a, b)
}
"""
    (got,), (onnx_got,) = both(source, {"a": a, "b": b})
    expected = boxes_module.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert got.shape == (13, 21) and got[0, 0] == pytest.approx(1.0) and got[1, 1] == 0.0
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(onnx_got, got, atol=1e-6)
    assert 0.0 < got.mean() < 1.0


# ---- nms


def torchvision_select(boxes, scores, groups, iou, score_threshold, max_output):
    """What a torchvision user writes: the boxes above the threshold, batched_nms (its exact
    class-by-class path, the NMS kernel the test's reference), the best max_output."""
    detection_package()
    ops = importlib.import_module("torchvision.ops.boxes")
    b, s, g = torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups)
    index = (
        torch.where(s > score_threshold)[0] if score_threshold is not None else torch.arange(len(s))
    )
    keep = index[ops.batched_nms(b[index], s[index], g[index], iou)]
    return keep[:max_output].numpy() if max_output is not None else keep.numpy()


NMS_SPEC = """
model Select {{
    input boxes: f32[N, 4]
    input scores: f32[N]
    input groups: {dtype}[N]
    output keep = nms(boxes, scores{groups}{attrs})
}}
"""


@pytest.mark.parametrize(
    "groups, attrs",
    [
        (None, ""),
        (None, ", iou_threshold=0.3, max_output=7"),
        ([0, 1, 2], ", iou_threshold=0.5"),
        ([-3, 7, 100], ", iou_threshold=0.4, score_threshold=0.2, max_output=25"),
        ([5], ", score_threshold=0.0"),
    ],
)
@pytest.mark.parametrize("dtype", ["i64", "i32"])
def test_nms_matches_torchvision_batched_nms(groups, attrs, dtype):
    rng = np.random.default_rng(3)
    n = 300
    boxes = random_boxes(rng, n)
    scores = rng.uniform(-1, 1, n).astype(np.float32)
    values = np.asarray(groups if groups is not None else [0], np.int64)
    labels = rng.choice(values, n).astype(np.int64 if dtype == "i64" else np.int32)
    source = NMS_SPEC.format(
        dtype=dtype, groups=", groups" if groups is not None else "", attrs=attrs
    )
    spec = dslc.compile_source(source)
    a = spec.graph.nodes[-1].attrs
    (got,), (onnx_got,) = both(source, {"boxes": boxes, "scores": scores, "groups": labels})
    expected = torchvision_select(
        boxes, scores, labels, a["iou_threshold"], a["score_threshold"], a["max_output"]
    )
    assert got.dtype == np.int64 and onnx_got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(onnx_got, expected)
    if a["max_output"] is None:  # boxes were suppressed, and some kept in each group
        assert 0 < len(expected) < n
        assert set(labels[expected].tolist()) == set(values.tolist())
    else:
        assert len(expected) == a["max_output"]


def test_nms_orders_equal_scores_by_index():
    rng = np.random.default_rng(4)
    boxes = random_boxes(rng, 60, spread=100.0)
    scores = rng.integers(0, 4, 60).astype(np.float32) / 4  # many ties
    labels = np.zeros(60, np.int64)
    source = NMS_SPEC.format(dtype="i64", groups=", groups", attrs="")
    (got,), (onnx_got,) = both(source, {"boxes": boxes, "scores": scores, "groups": labels})
    kept = torchvision_select(boxes, scores, labels, 0.5, None, None)
    # torchvision's final sort is not stable: the same boxes, ties in any order
    expected = sorted(kept.tolist(), key=lambda i: (-scores[i], i))
    assert len(set(scores[kept].tolist())) < len(kept) < 60  # ties among the kept, and drops
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(onnx_got, expected)


def test_nms_kept_boxes_gathered():
    """nms and gather together, as a detector's postprocessing reads: no kept box overlaps a
    better one of its group above the threshold, and every dropped box overlaps one."""
    rng = np.random.default_rng(5)
    boxes, scores = random_boxes(rng, 80), rng.uniform(0, 1, 80).astype(np.float32)
    source = """
model Kept {
    input boxes: f32[N, 4]
    input scores: f32[N]
    keep = nms(boxes, scores, iou_threshold=0.5)
    output kept = gather(boxes, keep)
    output iou = box_iou(kept, boxes)
}
"""
    (kept, iou), (onnx_kept, onnx_iou) = both(source, {"boxes": boxes, "scores": scores})
    np.testing.assert_array_equal(onnx_kept, kept)
    np.testing.assert_allclose(onnx_iou, iou, atol=1e-6)
    kept_scores = np.array([scores[(boxes == k).all(axis=1)][0] for k in kept])
    assert (np.diff(kept_scores) <= 0).all()
    self_iou = iou[:, [int(np.flatnonzero((boxes == k).all(axis=1))[0]) for k in kept]]
    assert (np.triu(self_iou, 1) <= 0.5).all()
    dropped = [i for i in range(80) if not (kept == boxes[i]).all(axis=1).any()]
    assert dropped and all((iou[kept_scores > scores[i], i] > 0.5).any() for i in dropped)


# ---- topk and gather


TOPK_SPEC = """
model Top {{
    input x: f32[N, 6, 9]
    values, index = x -> topk({k}{attrs})
    output values
    output index
}}
"""


@pytest.mark.parametrize(
    "k, attrs, axis, largest",
    [(3, "", 2, True), (6, ", axis=1", 1, True), (2, ", axis=0, largest=false", 0, False)],
)
def test_topk_values_and_indices_ties_by_index(k, attrs, axis, largest):
    rng = np.random.default_rng(6)
    x = rng.integers(0, 4, (5, 6, 9)).astype(np.float32)  # many ties
    (values, index), (onnx_values, onnx_index) = both(TOPK_SPEC.format(k=k, attrs=attrs), {"x": x})
    order = np.argsort(-x if largest else x, axis=axis, kind="stable")
    expected_index = np.take(order, np.arange(k), axis=axis)
    expected = torch.topk(torch.from_numpy(x), k, dim=axis, largest=largest).values.numpy()
    np.testing.assert_array_equal(index, expected_index)
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(onnx_index, expected_index)
    np.testing.assert_array_equal(onnx_values, expected)


def test_topk_leads_with_values():
    source = """
model Best {
    input x: f32[N, 10]
    output best = x -> topk(3) -> relu
}
"""
    x = np.random.default_rng(7).normal(size=(4, 10)).astype(np.float32)
    (got,), (onnx_got,) = both(source, {"x": x})
    np.testing.assert_array_equal(got, np.maximum(-np.sort(-x, axis=1)[:, :3], 0))
    np.testing.assert_array_equal(onnx_got, got)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", ["i64", "i32"])
def test_gather_is_onnx_gather(axis, dtype):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(5, 6, 7)).astype(np.float32)
    index = rng.integers(-5, 5, (2, 3)).astype(np.int64 if dtype == "i64" else np.int32)
    source = f"""
model Pick {{
    input x: f32[5, 6, 7]
    input index: {dtype}[2, 3]
    output y = gather(x, index, axis={axis})
}}
"""
    (got,), (onnx_got,) = both(source, {"x": x, "index": index})
    expected = np.take(x, index, axis=axis)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(onnx_got, expected)


def test_generated_forward_reads_as_torchvision_users_write_it():
    source = dslc.compile_source(
        NMS_SPEC.format(dtype="i64", groups=", groups", attrs=", max_output=100")
    ).torch_source()
    assert "keep = batched_nms(boxes, scores, groups, 0.5)[:100]" in source
    assert "import torchvision" not in source
    pick = dslc.compile_source(
        "model P {\n input x: f32[N, 4]\n input i: i64[K]\n output y = gather(x, i)\n"
        " output z = gather(x, i, axis=1)\n}\n"
    ).torch_source()
    assert "y = x[i]" in pick and "z = x[:, i]" in pick
