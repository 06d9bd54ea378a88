"""Non-maximum suppression as an op of its own (torchvision.ops.nms and batched_nms, with the
score threshold and the top-k that torchvision's users apply around them): the indices of the
boxes kept, a count the data sets. The greedy suppression is box_code.py's, the one the rpn
and detections ops run.

ONNX: NonMaxSuppression exactly per group, without torchvision's coordinate-offset trick: the
distinct groups (Unique) are its classes, each class scoring its own boxes and the others -inf,
which its score threshold (-inf, or score_threshold: both strict, as `scores > t`) drops. The
kept scores, scattered into a table of -inf, give the order by TopK: decreasing score, equal
scores by index, as box_code's nms orders them."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ir.types import INT_DTYPES, TensorType, data_dim
from dslc.ops.base import Attr, OpDef, register
from dslc.ops.box_code import Onnx, helpers
from dslc.ops.boxes import check_boxes
from dslc.ops.proposals_onnx import nms, scalar

NONE = float("-inf")  # the score of a box another group holds: never kept
EVERY = 2**31 - 1  # NonMaxSuppression's max_output_boxes_per_class without a limit

NMS_ABOVE = '''
def nms_above(boxes, scores, iou_threshold, score_threshold, groups=None):
    """Non-maximum suppression of the boxes scoring above score_threshold, within each group
    where groups are given (batched_nms): their indices, by decreasing score."""
    index = torch.nonzero(scores > score_threshold).flatten()
    if groups is None:
        return index[nms(boxes[index], scores[index], iou_threshold)]
    return index[batched_nms(boxes[index], scores[index], groups[index], iou_threshold)]
'''


@register
class Nms(OpDef):
    name = "nms"
    family = "detection"
    doc = (
        "Greedy non-maximum suppression (torchvision.ops.nms): of boxes (N, 4) with scores "
        "(N), the indices (K) i64 of the boxes kept, by decreasing score, equal scores by "
        "index; a box goes when its IoU with a kept, higher-scoring box is above "
        "iou_threshold. With `groups` (N) of integers (class labels, pyramid levels), boxes "
        "of different groups never suppress each other (torchvision's batched_nms). Only the "
        "boxes scoring above score_threshold take part, and max_output keeps the best after "
        "suppression. K depends on the data; `gather(boxes, keep)` picks the kept boxes."
    )
    example = "keep = nms(boxes, scores, labels, iou_threshold=0.5, max_output=100)"
    inputs = ("boxes", "scores", "groups?")
    attrs = (
        Attr(
            "iou_threshold",
            "float",
            0.5,
            "IoU above which a box is dropped",
            minimum=0.0,
            maximum=1.0,
        ),
        Attr("score_threshold", "float", None, "only boxes scoring above it take part"),
        Attr("max_output", "int", None, "the most boxes kept: the best after NMS", positive=True),
    )

    def infer(self, ins, a):
        boxes, scores, *groups = ins
        check_boxes(self.name, "boxes", boxes, listed=True)
        n = boxes.shape[0]
        if scores.dtype != "f32" or scores.shape != (n,):
            raise SpecError(
                f"nms: scores must be f32[{n}], one per box, got {scores}",
                hint="per-class scores: the best one, `probs -> max(axis=1)`, with its class "
                "as the groups, `probs -> argmax(axis=1)`",
            )
        if groups and (groups[0].dtype not in INT_DTYPES or groups[0].shape != (n,)):
            raise SpecError(
                f"nms: groups must be integers ({n}), one per box, got {groups[0]}",
                hint="class labels, such as `labels = logits -> argmax(axis=1)`",
            )
        return TensorType("i64", (data_dim("K"),))

    def node_helpers(self, node):
        found = helpers("batched_nms")  # nms and batched_nms are one helper source
        above = node.attrs["score_threshold"] is not None
        return {**found, "nms_above": NMS_ABOVE} if above else found

    def torch_call(self, node, args, module):
        a, (boxes, scores, *groups) = node.attrs, args
        iou = a["iou_threshold"]
        if a["score_threshold"] is not None:
            grouped = [f"groups={groups[0]}"] if groups else []
            given = [boxes, scores, repr(iou), repr(a["score_threshold"]), *grouped]
            call = f"nms_above({', '.join(given)})"
        elif groups:
            call = f"batched_nms({boxes}, {scores}, {groups[0]}, {iou!r})"
        else:
            call = f"nms({boxes}, {scores}, {iou!r})"
        return call if a["max_output"] is None else f"{call}[:{a['max_output']}]"

    def onnx(self, node, b, ins, outs):
        o, a = Onnx(node, b), node.attrs
        boxes, scores = ins[0], ins[1]
        ax0 = o.const("ax", [0], "i64")
        table = (
            group_scores(o, scores, ins[2], node.inputs[2].type.dtype)
            if len(ins) > 2
            else (o.op("Unsqueeze", [scores, ax0]))
        )
        floor = NONE if a["score_threshold"] is None else a["score_threshold"]
        selected = nms(
            o,
            o.op("Unsqueeze", [boxes, ax0]),
            o.op("Unsqueeze", [table, ax0]),
            a["max_output"] or EVERY,
            a["iou_threshold"],
            floor,
        )
        box = o.op("Gather", [selected, o.const("col", 2, "i64")], "box", axis=1)
        kept = o.op("Gather", [scores, box], "kept")
        none = o.op("ConstantOfShape", [o.op("Shape", [scores])], "none", value=scalar(NONE))
        ranked = o.op("ScatterElements", [none, box, kept], "ranked", axis=0)
        count = o.op("Shape", [selected], "count", end=1)
        if a["max_output"]:
            count = o.op("Min", [count, o.const("most", [a["max_output"]], "i64")])
        b.alias(outs[0], o.topk(ranked, count, axis=0)[1])


def group_scores(o: Onnx, scores: str, groups: str, dtype: str) -> str:
    """(G, N) scores of each distinct group's boxes, -inf for the other groups' boxes."""
    if dtype != "i64":
        groups = o.op("Cast", [groups], to=7)  # INT64
    ids = o.op("Unique", [groups], "groups")
    member = o.op(
        "Equal",
        [
            o.op("Unsqueeze", [ids, o.const("ax", [1], "i64")]),
            o.op("Unsqueeze", [groups, o.const("ax", [0], "i64")]),
        ],
        "member",
    )
    return o.op("Where", [member, scores, o.const("none", NONE)], "by_group")
