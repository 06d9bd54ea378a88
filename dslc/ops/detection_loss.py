"""Faster R-CNN's training losses (Ren et al., 2015), as torchvision computes them: anchors
(rpn_loss) and proposals (roi_loss) matched to the objects by IoU, a balanced random sample
of them, and a classification loss over the sample plus a smooth L1 loss on the boxes of its
foreground. The objects are per-object targets: boxes (M, 5), rows (image, x1, y1, x2, y2),
and for roi_loss their labels (M) in 1 .. classes - 1."""

from __future__ import annotations

from typing import ClassVar

from dslc.diagnostics import SpecError
from dslc.ir.types import TensorType
from dslc.ops.base import Attr, OpDef, register
from dslc.ops.box_code import helpers
from dslc.ops.loss import SCALAR

MATCH = '''
def match_boxes(iou, high, low, allow_low_quality=False):
    """For each column of iou (objects, candidates), the object it matches: the best one if
    its IoU is at least high; -1 (background) below low, -2 (ignored) in between; with
    allow_low_quality, each object's best candidates match it whatever their IoU
    (torchvision's Matcher)."""
    if iou.shape[0] == 0:
        return torch.full((iou.shape[1],), -1, dtype=torch.long, device=iou.device)
    values, matches = iou.max(dim=0)
    best_of_each = matches.clone()
    matches[values < low] = -1
    matches[(values >= low) & (values < high)] = -2
    if allow_low_quality:
        best = iou.max(dim=1, keepdim=True).values
        _, columns = torch.nonzero(iou == best, as_tuple=True)
        matches[columns] = best_of_each[columns]
    return matches


def sample_labels(labels, batch_size, positive_fraction):
    """A random balanced sample of labels (> 0 foreground, 0 background, -1 ignored): at most
    batch_size * positive_fraction foreground positions, then background ones up to
    batch_size (torchvision's BalancedPositiveNegativeSampler)."""
    positive = torch.nonzero(labels >= 1).flatten()
    negative = torch.nonzero(labels == 0).flatten()
    num_pos = min(int(batch_size * positive_fraction), positive.numel())
    num_neg = min(batch_size - num_pos, negative.numel())
    positive = positive[torch.randperm(positive.numel(), device=labels.device)[:num_pos]]
    negative = negative[torch.randperm(negative.numel(), device=labels.device)[:num_neg]]
    return positive, negative
'''

RPN_LOSS = '''
def rpn_loss(
    objectness,
    deltas,
    anchors,
    boxes,
    fg_iou=0.7,
    bg_iou=0.3,
    batch_size_per_image=256,
    positive_fraction=0.5,
):
    """The RPN's loss (torchvision's RegionProposalNetwork.compute_loss): each image's anchors
    matched to its objects (IoU >= fg_iou foreground, < bg_iou background, each object's best
    anchors foreground too), a balanced sample, binary cross-entropy of the objectness over
    it plus smooth L1 (beta 1/9) of the foreground's deltas, summed and divided by the
    sample's size."""
    labels, targets = [], []
    for i in range(len(objectness)):
        gt = boxes[boxes[:, 0] == i, 1:]
        matches = match_boxes(box_iou(gt, anchors), fg_iou, bg_iou, allow_low_quality=True)
        labels.append((matches >= 0).to(objectness.dtype) - (matches == -2).to(objectness.dtype))
        matched = gt[matches.clamp(min=0)] if len(gt) else anchors
        targets.append(encode_boxes(matched, anchors))
    labels, targets = torch.stack(labels).flatten(), torch.stack(targets).flatten(0, 1)
    sampled = [sample_labels(row, batch_size_per_image, positive_fraction) for row in
               labels.view(len(objectness), -1)]
    width = labels.numel() // len(objectness)
    positive = torch.cat([pos + i * width for i, (pos, _) in enumerate(sampled)])
    negative = torch.cat([neg + i * width for i, (_, neg) in enumerate(sampled)])
    index = torch.cat([positive, negative])
    box_loss = F.smooth_l1_loss(
        deltas.flatten(0, 1)[positive], targets[positive], beta=1 / 9, reduction="sum"
    )
    objectness_loss = F.binary_cross_entropy_with_logits(
        objectness.flatten()[index], labels[index]
    )
    return objectness_loss + box_loss / max(index.numel(), 1)
'''

ROI_LOSS = '''
def roi_loss(
    class_logits,
    box_regression,
    rois,
    boxes,
    labels,
    fg_iou=0.5,
    bg_iou=0.5,
    batch_size_per_image=512,
    positive_fraction=0.25,
    weights=(10.0, 10.0, 5.0, 5.0),
):
    """The box head's loss (torchvision's RoIHeads: assign_targets_to_proposals,
    subsample, fastrcnn_loss): each image's RoIs matched to its objects (IoU >= fg_iou: the
    object's class, below bg_iou: background), a balanced sample, cross-entropy of the class
    logits over it plus smooth L1 (beta 1/9) of the foreground's deltas for its class,
    divided by the sample's size."""
    num_classes = class_logits.shape[-1]
    picked, classes, targets = [], [], []
    for i in range(int(rois[:, 0].max().item()) + 1 if len(rois) else 0):
        index = torch.nonzero(rois[:, 0] == i).flatten()
        proposals, is_image = rois[index, 1:], boxes[:, 0] == i
        gt, gt_labels = boxes[is_image, 1:], labels[is_image]
        matches = match_boxes(box_iou(gt, proposals), fg_iou, bg_iou)
        found = gt_labels[matches.clamp(min=0)] if len(gt) else torch.zeros_like(matches)
        found = torch.where(matches == -1, 0, torch.where(matches == -2, -1, found))
        positive, negative = sample_labels(found, batch_size_per_image, positive_fraction)
        chosen = torch.cat([positive, negative])
        picked.append(index[chosen])
        classes.append(found[chosen])
        matched = gt[matches.clamp(min=0)[chosen]] if len(gt) else proposals[chosen]
        targets.append(encode_boxes(matched, proposals[chosen], weights))
    if not picked:
        return class_logits.sum() * 0
    picked, classes, targets = torch.cat(picked), torch.cat(classes), torch.cat(targets)
    foreground = torch.nonzero(classes > 0).flatten()
    deltas = box_regression[picked].view(len(picked), num_classes, 4)
    box_loss = F.smooth_l1_loss(
        deltas[foreground, classes[foreground]], targets[foreground], beta=1 / 9, reduction="sum"
    )
    return F.cross_entropy(class_logits[picked], classes) + box_loss / max(len(picked), 1)
'''

SAMPLING = (
    Attr("batch_size_per_image", "int", 256, "candidates sampled per image", positive=True),
    Attr(
        "positive_fraction",
        "float",
        0.5,
        "the most of the sample that is foreground",
        minimum=0.0,
        maximum=1.0,
    ),
)


class DetectionLoss(OpDef):
    family = "loss"
    outputs_only: ClassVar[tuple[int, ...]] = (0, 1, 2)
    defaults: ClassVar[dict[str, object]] = {}

    def torch_call(self, node, args, module):
        extra = [
            f"{k}={tuple(v) if isinstance(v, tuple | list) else v!r}"
            for k, v in node.attrs.items()
            if k in self.defaults and v != self.defaults[k]
        ]
        return f"{self.name}({', '.join([*args, *extra])})"


def _objects(op: str, boxes: TensorType) -> None:
    if boxes.dtype != "f32" or boxes.rank != 2 or boxes.shape[1] != 5:
        raise SpecError(
            f"{op}: the objects' boxes must be f32[M, 5], rows (image, x1, y1, x2, y2), got "
            f"{boxes}",
            hint="declare `target boxes: f32[M, 5]` in the train section",
        )


@register
class RpnLoss(DetectionLoss):
    name = "rpn_loss"
    doc = (
        "The region proposal network's loss (torchvision's): each image's anchors matched to "
        "its objects by IoU (at least fg_iou: foreground; below bg_iou: background; each "
        "object's best anchors: foreground), a balanced random sample, binary cross-entropy "
        "of the objectness over the sample plus the smooth L1 loss (beta 1/9) of the "
        "foreground's box deltas, divided by the sample's size. It takes the rpn op's "
        "training outputs (objectness (N, A), deltas (N, A, 4), anchors (A, 4)) and the "
        "objects' boxes (M, 5)."
    )
    example = "loss = rpn_loss(objectness, deltas, anchors, boxes)"
    inputs = ("objectness", "deltas", "anchors", "boxes")
    attrs = (
        Attr(
            "fg_iou",
            "float",
            0.7,
            "IoU from which an anchor is foreground",
            minimum=0.0,
            maximum=1.0,
        ),
        Attr(
            "bg_iou",
            "float",
            0.3,
            "IoU below which an anchor is background",
            minimum=0.0,
            maximum=1.0,
        ),
        *SAMPLING,
    )
    defaults = {"fg_iou": 0.7, "bg_iou": 0.3, "batch_size_per_image": 256, "positive_fraction": 0.5}
    torch_helpers = {
        **helpers("box_iou", "encode_boxes"),
        "match_boxes": MATCH,
        "rpn_loss": RPN_LOSS,
    }

    def infer(self, ins, a):
        objectness, deltas, anchors, boxes = ins
        count = anchors.shape[0] if anchors.rank == 2 else None
        if anchors.shape != (count, 4) or objectness.rank != 2 or objectness.shape[1] != count:
            raise SpecError(
                f"rpn_loss: objectness {objectness} and anchors {anchors} do not match: one "
                "logit per anchor, (N, A) and (A, 4)",
                hint="pass the rpn op's outputs: `rois, objectness, deltas, anchors = "
                "image -> rpn(...)`",
            )
        if deltas.shape != (objectness.shape[0], count, 4):
            raise SpecError(f"rpn_loss: deltas must be (N, A, 4) for {objectness}, got {deltas}")
        if a["bg_iou"] > a["fg_iou"]:
            raise SpecError("rpn_loss: bg_iou must be at most fg_iou")
        _objects(self.name, boxes)
        return SCALAR


@register
class RoiLoss(DetectionLoss):
    name = "roi_loss"
    doc = (
        "The box head's loss (torchvision's Fast R-CNN loss): each image's RoIs matched to its "
        "objects by IoU (at least fg_iou: the object's class; below bg_iou: background), a "
        "balanced random sample, cross-entropy of the class logits over it plus the smooth L1 "
        "loss (beta 1/9) of the foreground's deltas for their class, encoded with `weights`, "
        "divided by the sample's size. Unlike torchvision it samples from the RoIs the head "
        "ran on, without adding the objects' own boxes to them."
    )
    example = "loss = roi_loss(logits, box_deltas, rois, boxes, labels)"
    inputs = ("class_logits", "box_regression", "rois", "boxes", "labels")
    attrs = (
        Attr(
            "fg_iou",
            "float",
            0.5,
            "IoU from which a RoI is its object's class",
            minimum=0.0,
            maximum=1.0,
        ),
        Attr(
            "bg_iou", "float", 0.5, "IoU below which a RoI is background", minimum=0.0, maximum=1.0
        ),
        Attr("batch_size_per_image", "int", 512, "RoIs sampled per image", positive=True),
        Attr(
            "positive_fraction",
            "float",
            0.25,
            "the most of the sample that is foreground",
            minimum=0.0,
            maximum=1.0,
        ),
        Attr(
            "weights",
            "floats",
            [10.0, 10.0, 5.0, 5.0],
            "the deltas' scales (x, y, w, h)",
            positive=True,
        ),
    )
    defaults = {
        "fg_iou": 0.5,
        "bg_iou": 0.5,
        "batch_size_per_image": 512,
        "positive_fraction": 0.25,
        "weights": (10.0, 10.0, 5.0, 5.0),
    }
    torch_helpers = {
        **helpers("box_iou", "encode_boxes"),
        "match_boxes": MATCH,
        "roi_loss": ROI_LOSS,
    }

    def infer(self, ins, a):
        logits, regression, rois, boxes, labels = ins
        k = logits.shape[0]
        classes = logits.shape[1] if logits.rank == 2 else None
        if not isinstance(classes, int) or regression.shape != (k, 4 * classes):
            raise SpecError(
                f"roi_loss: class_logits {logits} and box_regression {regression} must be "
                "(K, C) and (K, 4C), a box per class",
            )
        if rois.shape != (k, 5):
            raise SpecError(f"roi_loss: rois must be ({k}, 5), the RoIs scored, got {rois}")
        _objects(self.name, boxes)
        if labels.dtype not in ("i64", "i32") or labels.shape != (boxes.shape[0],):
            raise SpecError(
                f"roi_loss: labels must be an integer class per object, ({boxes.shape[0]},), "
                f"got {labels}",
                hint="declare `target labels: i64[M]` beside `target boxes: f32[M, 5]`",
            )
        if len(a["weights"]) != 4:
            raise SpecError(f"roi_loss: weights has {len(a['weights'])} values, not 4")
        return SCALAR
