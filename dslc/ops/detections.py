"""Faster R-CNN's final detections (Ren et al., 2015; torchvision's
RoIHeads.postprocess_detections): from the box head's class logits and class-specific box
deltas for each RoI, the boxes, scores and labels an image's detections are."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ir.types import TensorType, data_dim
from dslc.ops.base import Attr, OpDef, register
from dslc.ops.box_code import helpers
from dslc.ops.detections_onnx import emit_detections

POSTPROCESS = '''
def postprocess_detections(
    class_logits,
    box_regression,
    rois,
    image,
    weights=(10.0, 10.0, 5.0, 5.0),
    score_threshold=0.05,
    nms_threshold=0.5,
    detections=100,
    min_size=1e-2,
):
    """Faster R-CNN's detections (torchvision's RoIHeads.postprocess_detections): each RoI's
    box for every class, decoded from its deltas and clipped to the image, scored by softmax;
    per image, without the background (class 0), the boxes scoring above score_threshold and
    at least min_size wide and high, non-maximum suppression class by class, and the best
    `detections` of them. Boxes (D, 4), scores (D,), labels (D,) and each one's image (D,),
    image by image, best first."""
    num_classes = class_logits.shape[-1]
    deltas = box_regression.view(len(rois), num_classes, 4)
    boxes = decode_boxes(deltas, rois[:, None, 1:], weights)
    boxes = clip_boxes(boxes, image.shape[-2], image.shape[-1])[:, 1:].reshape(-1, 4)
    scores = F.softmax(class_logits, -1)[:, 1:].reshape(-1)
    labels = torch.arange(1, num_classes, device=rois.device).repeat(len(rois))
    images = rois[:, 0].long().repeat_interleave(num_classes - 1)
    wh = boxes[:, 2:] - boxes[:, :2]
    candidates = (scores > score_threshold) & (wh >= min_size).all(dim=1)
    keep = []
    for i in range(len(image)):
        index = torch.nonzero(candidates & (images == i)).flatten()
        kept = batched_nms(boxes[index], scores[index], labels[index], nms_threshold)
        keep.append(index[kept[:detections]])
    keep = torch.cat(keep)
    return boxes[keep], scores[keep], labels[keep], images[keep]
'''


@register
class Detections(OpDef):
    name = "detections"
    family = "detection"
    doc = (
        "Faster R-CNN's detections, as torchvision's RoIHeads.postprocess_detections: from the "
        "box head's class logits (K, C) and class-specific box deltas (K, 4C) for the RoIs "
        "(K, 5) of the image batch, each RoI's box for every class is decoded (Faster R-CNN's "
        "deltas, divided by `weights`) and clipped to the image and scored by softmax; per "
        "image, class 0 (the background) left out, the boxes scoring above score_threshold "
        "and at least min_size wide and high go through non-maximum suppression per class, "
        "and the best `detections` stay. Four outputs, one row per detection, image by image "
        "and best first: boxes (D, 4), scores (D), labels (D) and the image of each (D)."
    )
    example = "boxes, scores, labels, images = detections(logits, deltas, rois, image)"
    detection_outputs = ("boxes", "scores", "labels", "images")
    inputs = ("class_logits", "box_regression", "rois", "image")
    attrs = (
        Attr("score_threshold", "float", 0.05, "the least score kept", minimum=0.0, maximum=1.0),
        Attr(
            "nms_threshold",
            "float",
            0.5,
            "IoU above which NMS drops a box",
            minimum=0.0,
            maximum=1.0,
        ),
        Attr("detections", "int", 100, "detections kept per image", positive=True),
        Attr("min_size", "float", 1e-2, "the least width and height kept", minimum=0.0),
        Attr(
            "weights",
            "floats",
            [10.0, 10.0, 5.0, 5.0],
            "the deltas' divisors (x, y, w, h)",
            positive=True,
        ),
    )
    torch_helpers = helpers("decode_boxes", "clip_boxes", "batched_nms")
    torch_helpers = {**torch_helpers, "postprocess_detections": POSTPROCESS}

    def resolve(self, ins, a):
        if len(a["weights"]) != 4:
            raise SpecError(f"detections: weights has {len(a['weights'])} values, not 4")
        return a

    def infer(self, ins, a):
        logits, deltas, rois, image = ins
        if logits.rank != 2 or not isinstance(logits.shape[1], int) or logits.shape[1] < 2:
            raise SpecError(
                f"detections: class_logits must be (K, classes) with at least 2 classes (the "
                f"background is class 0), got {logits}"
            )
        classes = logits.shape[1]
        if deltas.shape != (logits.shape[0], 4 * classes):
            raise SpecError(
                f"detections: box_regression must be ({logits.shape[0]}, {4 * classes}), a box "
                f"per RoI and class, got {deltas}",
                hint=f"the box predictor is linear(4 * {classes}) on the same RoIs",
            )
        if rois.shape != (logits.shape[0], 5):
            raise SpecError(
                f"detections: rois must be the RoIs the logits score, ({logits.shape[0]}, 5), "
                f"got {rois}"
            )
        if image.rank != 4 or not all(isinstance(d, int) for d in image.shape[2:]):
            raise SpecError(f"detections needs the image (N, C, H, W) of known size, got {image}")
        d = data_dim("D")
        return [
            TensorType("f32", (d, 4)),
            TensorType("f32", (d,)),
            TensorType("i64", (d,)),
            TensorType("i64", (d,)),
        ]

    def torch_call(self, node, args, module):
        a = node.attrs
        given = [
            f"{k}={a[k]!r}"
            for k, default in (
                ("score_threshold", 0.05),
                ("nms_threshold", 0.5),
                ("detections", 100),
                ("min_size", 1e-2),
            )
            if a[k] != default
        ]
        if tuple(a["weights"]) != (10.0, 10.0, 5.0, 5.0):
            given.insert(0, f"weights={tuple(a['weights'])!r}")
        return f"postprocess_detections({', '.join([*args, *given])})"

    def onnx(self, node, b, ins, outs):
        emit_detections(node, b, ins, outs)
