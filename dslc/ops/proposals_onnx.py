"""The rpn op in ONNX: the RegionProposalNetwork helper's numbers, with a dynamic count.

Per feature map: the head's convolutions (one set of initializers for every map), objectness
and deltas in the anchors' order, TopK, the deltas and anchors of the top boxes gathered and
decoded. Then for all maps at once: sigmoid, clipping, and a score of -1 for the boxes the
size and score tests drop. NonMaxSuppression runs per image (its batch) and per map (its
classes: each map's scores, the others' -1), so that boxes of different maps never suppress
each other, as in torchvision's batched_nms, exactly. The kept scores, scattered back into
an (N, P) table of -1, give each image's best post_nms_top_n by TopK; NonZero of the scores
above -1 lists them image by image, best first."""

from __future__ import annotations

import numpy as np

from dslc.ops.anchors import anchor_table, grid_shapes, level_sizes
from dslc.ops.box_code import Onnx

NOT_KEPT = -1.0  # the score of a box a test drops: below any probability


def emit_proposals(node, b, ins, outs) -> None:
    o = Onnx(node, b)
    a = node.attrs
    types = [v.type for v in node.inputs]
    shapes = grid_shapes("rpn", types[0], types[1:])
    sizes = level_sizes("rpn", a["sizes"], len(shapes))
    tables = anchor_table(types[0], shapes, sizes, a["aspect_ratios"])
    boxes, scores, levels, objectness, deltas_all = [], [], [], [], []
    for level, (feature, (h, w), table) in enumerate(zip(ins[1:], shapes, tables, strict=True)):
        logits, deltas = head(o, node, b, feature, h, w, len(table) // (h * w))
        objectness.append(logits)
        deltas_all.append(deltas)
        k = min(a["pre_nms_top_n"], len(table))
        top, index = o.topk(logits, k, axis=1)
        wide = o.op(
            "Expand",
            [
                o.op("Unsqueeze", [index, o.const("ax", [2], "i64")]),
                o.const("four", [1, 1, 4], "i64"),
            ],
        )
        picked = o.op("GatherElements", [deltas, wide], "deltas", axis=1)
        anchors = o.op("Gather", [o.const("anchors", table), index], "anchors", axis=0)
        boxes.append(o.decode(picked, anchors, (1.0, 1.0, 1.0, 1.0)))
        scores.append(top)
        levels += [level] * k
    all_boxes = o.clip(o.op("Concat", boxes, axis=1), *map(int, types[0].shape[2:4]))
    prob = o.op("Sigmoid", [o.op("Concat", scores, axis=1)])
    kept = o.op(
        "And",
        [
            o.sizes_at_least(all_boxes, a["min_size"]),
            o.op("GreaterOrEqual", [prob, o.const("least", a["score_threshold"])]),
        ],
    )
    masked = o.op("Where", [kept, prob, o.const("dropped", NOT_KEPT)], "masked")
    per_level = np.asarray(levels)[None, :] == np.arange(len(shapes))[:, None]  # (L, P)
    by_level = o.op(
        "Where",
        [
            o.const("levels", per_level[None], "bool"),
            o.op("Unsqueeze", [masked, o.const("ax", [1], "i64")]),
            o.const("dropped", NOT_KEPT),
        ],
        "by_level",
    )
    selected = nms(o, all_boxes, by_level, len(levels), a["nms_threshold"])
    best(o, b, outs[0], all_boxes, masked, selected, min(a["post_nms_top_n"], len(levels)))
    # for rpn_loss: in a graph for inference, nothing reads them
    if outs[1] in b.read:
        b.add(node, "Concat", objectness, [outs[1]], axis=1)
    if outs[2] in b.read:
        b.add(node, "Concat", deltas_all, [outs[2]], axis=1)
    if outs[3] in b.read:
        b.add(node, "Identity", [o.const("anchors", np.concatenate(tables))], [outs[3]])


def head(o: Onnx, node, b, feature: str, h: int, w: int, per_cell: int) -> tuple[str, str]:
    """The head on one map: objectness (N, H * W * A) and deltas (N, H * W * A, 4)."""
    conv = o.op(
        "Conv",
        [feature, b.param(node, "head.conv.0.0.weight"), b.param(node, "head.conv.0.0.bias")],
        "conv",
        pads=[1, 1, 1, 1],
    )
    t = o.op("Relu", [conv])
    logits = o.op(
        "Conv",
        [t, b.param(node, "head.cls_logits.weight"), b.param(node, "head.cls_logits.bias")],
        "cls_logits",
    )
    deltas = o.op(
        "Conv",
        [t, b.param(node, "head.bbox_pred.weight"), b.param(node, "head.bbox_pred.bias")],
        "bbox_pred",
    )
    flat = o.op(
        "Reshape",
        [o.op("Transpose", [logits], perm=[0, 2, 3, 1]), o.const("shape", [0, -1], "i64")],
        "objectness",
    )
    split = o.op("Reshape", [deltas, o.const("shape", [0, per_cell, 4, h, w], "i64")])
    moved = o.op("Transpose", [split], perm=[0, 3, 4, 1, 2])
    return flat, o.op("Reshape", [moved, o.const("shape", [0, -1, 4], "i64")], "deltas")


def nms(
    o: Onnx, boxes: str, scores: str, most: int, threshold: float, floor: float = NOT_KEPT / 2
) -> str:
    """NonMaxSuppression's selected (M, 3) rows (batch, class, box); scores at or below
    `floor` (by default the -1 of a dropped box) never kept."""
    inputs = [
        boxes,
        scores,
        o.const("most", [most], "i64"),
        o.const("iou", [threshold]),
        o.const("floor", [floor]),
    ]
    return o.op("NonMaxSuppression", inputs, "selected")


def best(o: Onnx, b, out: str, boxes: str, scores: str, selected: str, k: int) -> None:
    """RoIs (K, 5) of each image's k best selected boxes, image by image, best first."""
    rows = o.op("Gather", [selected, o.const("cols", [0, 2], "i64")], "rows", axis=1)
    table = o.op("ConstantOfShape", [o.op("Shape", [scores])], "table", value=scalar(NOT_KEPT))
    kept = o.op("ScatterND", [table, rows, o.op("GatherND", [scores, rows])], "kept")
    top, index = o.topk(kept, k, axis=1)
    found = o.op(
        "Transpose",
        [o.op("NonZero", [o.op("Greater", [top, o.const("floor", NOT_KEPT / 2)])])],
        perm=[1, 0],
    )
    image = o.op("Gather", [found, o.const("zero", 0, "i64")], "image", axis=1)
    box = o.op("GatherND", [index, found], "box")
    at = o.op(
        "Concat",
        [
            o.op("Unsqueeze", [image, o.const("ax", [1], "i64")]),
            o.op("Unsqueeze", [box, o.const("ax", [1], "i64")]),
        ],
        axis=1,
    )
    picked = o.op("GatherND", [boxes, at], "boxes")
    column = o.op("Unsqueeze", [o.op("Cast", [image], to=1), o.const("ax", [1], "i64")])
    b.add(o.node, "Concat", [column, picked], [out], axis=1)


def scalar(value: float):
    from onnx import helper

    return helper.make_tensor("value", 1, [1], [value])
