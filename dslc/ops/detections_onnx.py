"""The detections op in ONNX: postprocess_detections' numbers, with a dynamic count.

Every RoI's box for every class decoded and clipped at once, (K, C, 4), and scored by Softmax;
the background left out, and the boxes that the score and size tests drop given a score of
-1. NonMaxSuppression has a box set per batch, so the classes are its batches (each class has
its own boxes, (C - 1, K, 4)) and the images its classes (an image's scores are its RoIs',
the others' -1): per class and per image, as torchvision's batched_nms, exactly. The kept
scores, scattered into an (N, K * (C - 1)) table of -1 (RoI by RoI, as postprocess_detections
flattens them, so that TopK breaks ties as it does: by that order), give each image's best by
TopK, and NonZero of the scores above -1 lists them image by image, best first."""

from __future__ import annotations

from dslc.ops.box_code import Onnx
from dslc.ops.proposals_onnx import NOT_KEPT, nms, scalar


def emit_detections(node, b, ins, outs) -> None:
    o = Onnx(node, b)
    a = node.attrs
    logits, regression, rois, image = ins
    classes = node.inputs[0].type.shape[1]
    height, width = node.inputs[3].type.shape[2:4]
    ax0, ax1 = o.const("ax", [0], "i64"), o.const("ax", [1], "i64")
    deltas = o.op("Reshape", [regression, o.const("shape", [-1, classes, 4], "i64")])
    reference = o.op("Unsqueeze", [o.slice_last(rois, 1, 5), ax1], "reference")
    decoded = o.clip(o.decode(deltas, reference, tuple(a["weights"])), height, width)
    boxes = o.op("Slice", [decoded, ax1, o.const("end", [classes], "i64"), ax1], "boxes")
    probs = o.op("Softmax", [logits], axis=-1)
    scores = o.op("Slice", [probs, ax1, o.const("end", [classes], "i64"), ax1], "scores")
    kept = o.op(
        "And",
        [
            o.op("Greater", [scores, o.const("least", a["score_threshold"])]),
            o.sizes_at_least(boxes, a["min_size"]),
        ],
    )
    masked = o.op("Where", [kept, scores, o.const("dropped", NOT_KEPT)], "masked")
    # NMS: batches are the classes, (C - 1, K, 4); classes the images, (C - 1, N, K)
    images = o.op("Cast", [o.column(rois, 0)], to=7)
    n1 = o.op("Slice", [o.op("Shape", [image]), o.const("zero", [0], "i64"), ax1])
    k1 = o.op("Slice", [o.op("Shape", [rois]), o.const("zero", [0], "i64"), ax1])
    count = o.op("Squeeze", [n1])
    ids = o.op("Range", [o.const("zero", 0, "i64"), count, o.const("one", 1, "i64")])
    member = o.op("Equal", [o.op("Unsqueeze", [images, ax0]), o.op("Unsqueeze", [ids, ax1])])
    by_class = o.op("Unsqueeze", [o.op("Transpose", [masked], perm=[1, 0]), ax1])
    per_image = o.op(
        "Where", [o.op("Unsqueeze", [member, ax0]), by_class, o.const("dropped", NOT_KEPT)]
    )
    class_boxes = o.op("Transpose", [boxes], perm=[1, 0, 2])
    selected = nms(o, class_boxes, per_image, 2**31 - 1, a["nms_threshold"])
    best(o, b, outs, boxes, scores, masked, selected, a["detections"], n1, k1)


def best(o: Onnx, b, outs, boxes, scores, masked, selected, most: int, n1, k1) -> None:
    """Each image's `most` best selected boxes: boxes, scores, labels and images; n1 and k1
    are the image and RoI counts, as 1-D tensors."""
    ax1 = o.const("ax", [1], "i64")
    cls, image, roi = (
        o.op("Gather", [selected, o.const("col", i, "i64")], axis=1) for i in range(3)
    )
    foreground = masked_classes(o, masked)
    flat = o.op("Add", [o.op("Mul", [roi, o.op("Squeeze", [foreground])]), cls])  # roi-major
    at = o.op("Concat", [o.op("Unsqueeze", [image, ax1]), o.op("Unsqueeze", [flat, ax1])], axis=1)
    where = o.op("Concat", [o.op("Unsqueeze", [roi, ax1]), o.op("Unsqueeze", [cls, ax1])], axis=1)
    width = o.op("Mul", [k1, foreground])
    table = o.op(
        "ConstantOfShape", [o.op("Concat", [n1, width], axis=0)], "table", value=scalar(NOT_KEPT)
    )
    kept = o.op("ScatterND", [table, at, o.op("GatherND", [masked, where])], "kept")
    values, index = o.topk(kept, o.op("Min", [o.const("most", [most], "i64"), width]), axis=1)
    above = o.op("Greater", [values, o.const("floor", NOT_KEPT / 2)])
    found = o.op("Transpose", [o.op("NonZero", [above])], perm=[1, 0])
    picked = o.op("GatherND", [index, found])
    per_roi = o.op("Squeeze", [foreground])
    roi, cls = o.op("Div", [picked, per_roi]), o.op("Mod", [picked, per_roi])
    pos = o.op("Concat", [o.op("Unsqueeze", [roi, ax1]), o.op("Unsqueeze", [cls, ax1])], axis=1)
    b.add(o.node, "GatherND", [boxes, pos], [outs[0]])
    b.add(o.node, "GatherND", [scores, pos], [outs[1]])
    b.add(o.node, "Add", [cls, o.const("one", 1, "i64")], [outs[2]])
    b.add(o.node, "Gather", [found, o.const("zero", 0, "i64")], [outs[3]], axis=1)


def masked_classes(o: Onnx, masked: str) -> str:
    """The foreground classes of the (K, C - 1) scores, as a 1-D tensor."""
    shape = o.op("Shape", [masked])
    return o.op("Slice", [shape, o.const("one", [1], "i64"), o.const("two", [2], "i64")])
