"""The detection ops against torchvision's own code (tests/detection_reference.py): anchors
against AnchorGenerator, rpn against RegionProposalNetwork in eval mode, detections against
RoIHeads.postprocess_detections, under the same weights and inputs; and each op's PyTorch
form against its ONNX graph in onnxruntime, with the number of boxes kept identical."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from detection_reference import detection_package

import dslc

RPN_SPEC = """
model Proposals {
    input image: f32[N, 3, 128, 96]
    input p2: f32[N, 16, 32, 24]
    input p3: f32[N, 16, 16, 12]
    input p4: f32[N, 16, 8, 6]
    output rois = image
        -> rpn(p2, p3, p4, sizes=[16, 32, 64], aspect_ratios=[0.5, 1.0, 2.0],
               pre_nms_top_n=300, post_nms_top_n=120) as rpn
}
"""

DETECTIONS_SPEC = """
model Detect(classes: int = 6) {
    input image: f32[N, 3, 128, 96]
    input logits: f32[K, classes]
    input deltas: f32[K, 4 * classes]
    input rois: f32[K, 5]
    boxes, scores, labels, images = detections(logits, deltas, rois, image, detections=30)
    output boxes
    output scores
    output labels
    output images
}
"""


def onnx_run(spec, state, inputs):
    model = spec.onnx_model(weights=state)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.numpy() for k, v in inputs.items()})


def rpn_inputs(batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    shapes = {"image": (3, 128, 96), "p2": (16, 32, 24), "p3": (16, 16, 12), "p4": (16, 8, 6)}
    return {k: torch.randn(batch, *s, generator=gen) for k, s in shapes.items()}


def torchvision_rpn(det, sizes, pre, post):
    rpn_module = importlib_rpn()
    anchors = det.anchor_utils.AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * 3)
    head = rpn_module.RPNHead(16, 3)
    return rpn_module.RegionProposalNetwork(
        anchors,
        head,
        0.7,
        0.3,
        256,
        0.5,
        dict(training=pre, testing=pre),
        dict(training=post, testing=post),
        0.7,
    ).eval()


def importlib_rpn():
    import importlib

    return importlib.import_module("torchvision.models.detection.rpn")


def test_anchors_match_torchvision_anchor_generator():
    det = detection_package()
    from torchvision.models.detection.image_list import ImageList

    gen = torch.Generator().manual_seed(0)
    inputs = rpn_inputs(2, gen)
    generator = det.anchor_utils.AnchorGenerator(((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3)
    images = ImageList(inputs["image"], [(128, 96)] * 2)
    expected = generator(images, [inputs["p2"], inputs["p3"], inputs["p4"]])[0]
    spec = dslc.compile_source(
        "model A {\n input image: f32[N, 3, 128, 96]\n input p2: f32[N, 16, 32, 24]\n"
        " input p3: f32[N, 16, 16, 12]\n input p4: f32[N, 16, 8, 6]\n"
        " output a = anchors(image, p2, p3, p4, sizes=[16, 32, 64])\n}\n"
    )
    got = spec.torch_module()(*inputs.values())
    assert torch.equal(got, expected)
    (onnx_got,) = onnx_run(spec, {}, inputs)
    np.testing.assert_array_equal(onnx_got, expected.numpy())


@pytest.mark.parametrize("batch", [1, 3])
def test_rpn_matches_torchvision_region_proposal_network(batch):
    det = detection_package()
    from torchvision.models.detection.image_list import ImageList

    torch.manual_seed(0)
    reference = torchvision_rpn(det, (16, 32, 64), 300, 120)
    with torch.no_grad():
        for p in reference.head.parameters():
            p.normal_(0.0, 0.1)
    spec = dslc.compile_source(RPN_SPEC)
    model = spec.torch_module().eval()
    model.rpn.head.load_state_dict(reference.head.state_dict())
    inputs = rpn_inputs(batch, torch.Generator().manual_seed(batch))
    features = {str(i): inputs[k] for i, k in enumerate(("p2", "p3", "p4"))}
    with torch.no_grad():
        boxes, _ = reference(ImageList(inputs["image"], [(128, 96)] * batch), features)
        got = model(*inputs.values())
    expected = torch.cat(
        [torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)]
    )
    assert len(expected) > 50 * batch  # enough proposals to mean something
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    (onnx_rois,) = onnx_run(spec, model.state_dict(), inputs)
    assert onnx_rois.shape == tuple(expected.shape)
    np.testing.assert_allclose(onnx_rois, expected.numpy(), rtol=0, atol=1e-4)


def detection_inputs(batch: int, k: int, classes: int, gen: torch.Generator):
    xy = torch.rand(k, 2, generator=gen) * torch.tensor([80.0, 110.0])
    wh = torch.rand(k, 2, generator=gen) * 40 + 2
    images = torch.randint(0, batch, (k,), generator=gen).sort().values
    rois = torch.cat([images[:, None].float(), xy, xy + wh], 1)
    logits = torch.randn(k, classes, generator=gen) * 3
    deltas = torch.randn(k, 4 * classes, generator=gen) * 0.5
    image = torch.zeros(batch, 3, 128, 96)
    return {"image": image, "logits": logits, "deltas": deltas, "rois": rois}


@pytest.mark.parametrize("batch", [1, 3])
def test_detections_match_torchvision_postprocess(batch):
    det = detection_package()
    heads = det.roi_heads.RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 30)
    inputs = detection_inputs(batch, 200, 6, torch.Generator().manual_seed(batch))
    rois = inputs["rois"]
    proposals = [rois[rois[:, 0] == i, 1:] for i in range(batch)]
    boxes, scores, labels = heads.postprocess_detections(
        inputs["logits"], inputs["deltas"], proposals, [(128, 96)] * batch
    )
    spec = dslc.compile_source(DETECTIONS_SPEC)
    got = spec.torch_module()(*inputs.values())
    expected = (
        torch.cat(boxes),
        torch.cat(scores),
        torch.cat(labels),
        torch.cat([torch.full((len(b),), i) for i, b in enumerate(boxes)]),
    )
    assert len(expected[0]) > 10 * batch
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape and g.dtype == e.dtype
        torch.testing.assert_close(g, e, rtol=0, atol=1e-4)
    for g, e in zip(onnx_run(spec, {}, inputs), expected, strict=True):
        assert g.shape == tuple(e.shape)
        np.testing.assert_allclose(g, e.numpy(), rtol=0, atol=1e-4)


def test_dslc_run_lists_each_images_detections(tmp_path, capsys):
    """The ONNX model of a detector names its detection outputs (metadata dslc.detections), and
    `dslc run` lists each image's detections, best first, with as many as the outputs hold."""
    from dslc.cli import main

    model, image = tmp_path / "detector.onnx", tmp_path / "image.npy"
    assert main(["compile", "specs/shapes_detector.dl", "--target", "onnx", "-o", str(model)]) == 0
    np.save(image, np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32))
    capsys.readouterr()
    assert main(["run", str(model), "--input", f"image={image}"]) == 0
    printed = capsys.readouterr().out
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map["dslc.detections"]
    assert json.loads(meta) == {n: n for n in ("boxes", "scores", "labels", "images")}
    images = sess.run(["images"], {"image": np.load(image)})[0]
    for i in range(2):
        count = int((images == i).sum())
        assert f"image {i}: {count} detection{'s' if count != 1 else ''}" in printed
    first = printed.split("image 0:")[1].splitlines()[1].split()
    assert first[0].isdigit() and 0.0 < float(first[1]) <= 1.0


def test_rpn_takes_its_training_top_n_while_training():
    """train_pre_nms_top_n and train_post_nms_top_n (torchvision's 2000 and 2000 while it
    trains): in training mode the rpn keeps what an rpn with those numbers keeps in eval mode."""
    training = dslc.compile_source(
        RPN_SPEC.replace(
            "post_nms_top_n=120)",
            "post_nms_top_n=120, train_pre_nms_top_n=100, train_post_nms_top_n=40)",
        )
    )
    plain = dslc.compile_source(
        RPN_SPEC.replace(
            "pre_nms_top_n=300, post_nms_top_n=120", "pre_nms_top_n=100, post_nms_top_n=40"
        )
    )
    torch.manual_seed(0)
    model = training.torch_module()
    other = plain.torch_module()
    other.load_state_dict(model.state_dict())
    inputs = rpn_inputs(3, torch.Generator().manual_seed(7))
    with torch.no_grad():
        in_training = model.train()(*inputs.values())
        in_eval = model.eval()(*inputs.values())
        expected = other.eval()(*inputs.values())
    torch.testing.assert_close(in_training, expected, rtol=0, atol=0)
    counts = torch.bincount(in_training[:, 0].long(), minlength=3)
    assert counts.max() <= 40 and len(in_eval) > len(in_training)
