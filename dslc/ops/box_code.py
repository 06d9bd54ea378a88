"""What the detection ops share: Faster R-CNN's box arithmetic, once as the PyTorch helpers a
generated file carries (torchvision's BoxCoder.decode, clip_boxes_to_image, box_iou and
batched_nms, in plain torch: dslc's output does not import torchvision) and once as the ONNX
nodes that compute the same numbers in the same order. Boxes are (x1, y1, x2, y2)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dslc.backends.onnx.builder import OnnxBuilder
    from dslc.ir.graph import Node

# torchvision's bbox_xform_clip: no box grows more than 1000/16 times its reference
DELTA_CLIP = math.log(1000.0 / 16)

DECODE_BOXES = f'''
def decode_boxes(deltas, boxes, weights=(1.0, 1.0, 1.0, 1.0), clip={DELTA_CLIP!r}):
    """Boxes (..., 4) from deltas (..., 4) relative to reference boxes (..., 4): Faster R-CNN's
    parameterization (torchvision's BoxCoder.decode); `clip` is log(1000 / 16)."""
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    ctr_x = boxes[..., 0] + 0.5 * widths
    ctr_y = boxes[..., 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = (deltas[..., 2] / ww).clamp(max=clip)
    dh = (deltas[..., 3] / wh).clamp(max=clip)
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    half_w = 0.5 * (dw.exp() * widths)
    half_h = 0.5 * (dh.exp() * heights)
    return torch.stack(
        (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=-1
    )
'''

ENCODE_BOXES = '''
def encode_boxes(boxes, reference, weights=(1.0, 1.0, 1.0, 1.0)):
    """The deltas (..., 4) that decode_boxes turns back into boxes (..., 4) from the
    reference boxes (..., 4) (torchvision's BoxCoder.encode)."""
    ex_widths = reference[..., 2] - reference[..., 0]
    ex_heights = reference[..., 3] - reference[..., 1]
    ex_ctr_x = reference[..., 0] + 0.5 * ex_widths
    ex_ctr_y = reference[..., 1] + 0.5 * ex_heights
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    ctr_x = boxes[..., 0] + 0.5 * widths
    ctr_y = boxes[..., 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    return torch.stack(
        (
            wx * (ctr_x - ex_ctr_x) / ex_widths,
            wy * (ctr_y - ex_ctr_y) / ex_heights,
            ww * torch.log(widths / ex_widths),
            wh * torch.log(heights / ex_heights),
        ),
        dim=-1,
    )
'''

CLIP_BOXES = '''
def clip_boxes(boxes, height, width):
    """Boxes (..., 4) clipped to an image of height x width."""
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)
'''

BOX_IOU = '''
def box_iou(boxes1, boxes2):
    """Intersection over union of every box of boxes1 (M, 4) with every box of boxes2 (K, 4)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    top_left = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2 - inter)
'''

BATCHED_NMS = '''
def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression: the indices of the boxes kept, by decreasing score (equal
    scores by index); a box goes when it overlaps a kept, higher-scoring box by an IoU above
    iou_threshold."""
    order = scores.argsort(descending=True, stable=True)
    overlaps = box_iou(boxes[order], boxes[order]) > iou_threshold
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1 :] &= ~overlaps[i, i + 1 :]
    return order[keep]


def batched_nms(boxes, scores, groups, iou_threshold):
    """nms within each group (a class, a pyramid level): boxes of different groups never
    suppress each other. The kept indices, by decreasing score and equal scores by index
    (torchvision's batched_nms; its order of ties is unspecified, ONNX's TopK's is this)."""
    keep = [
        index[nms(boxes[index], scores[index], iou_threshold)]
        for index in (torch.nonzero(groups == g).flatten() for g in groups.unique())
    ]
    keep = torch.cat(keep).sort().values if keep else groups.new_zeros(0, dtype=torch.long)
    return keep[scores[keep].argsort(descending=True, stable=True)]
'''

BOX_HELPERS = {
    "decode_boxes": DECODE_BOXES,
    "encode_boxes": ENCODE_BOXES,
    "clip_boxes": CLIP_BOXES,
    "box_iou": BOX_IOU,
    "batched_nms": BATCHED_NMS,
}


def helpers(*names: str) -> dict[str, str]:
    """The helpers an op's PyTorch form calls, with those they call (batched_nms: box_iou)."""
    needs = {"batched_nms": ("box_iou",)}
    wanted = [n for name in names for n in (*needs.get(name, ()), name)]
    return {n: BOX_HELPERS[n] for n in dict.fromkeys(wanted)}


class Onnx:
    """The ONNX nodes of one detection node's box arithmetic, named after it (`b.temp`)."""

    def __init__(self, node: Node, b: OnnxBuilder) -> None:
        self.node, self.b, self.count = node, b, 0

    def name(self, what: str) -> str:
        self.count += 1
        return self.b.temp(self.node, f"{what}{self.count}")

    def op(self, op_type: str, inputs: list[str], what: str = "", **attrs) -> str:
        return self.b.add(self.node, op_type, inputs, [self.name(what or op_type)], **attrs)

    def topk(self, x: str, k: int | str, axis: int) -> tuple[str, str]:
        """TopK's values and indices: the k (a number, or a tensor's name) largest along axis,
        largest first."""
        values, index = self.name("top"), self.name("index")
        count = self.const("k", [k], "i64") if isinstance(k, int) else k
        self.b.add(self.node, "TopK", [x, count], [values, index], axis=axis)
        return values, index

    def const(self, what: str, value, dtype: str = "f32") -> str:
        self.count += 1
        return self.b.const(self.node, f"{what}{self.count}", value, dtype)

    def column(self, x: str, i: int, keep: bool = False) -> str:
        """x[..., i] (x[..., i:i + 1] with `keep`)."""
        axes, starts, ends = self.const("axis", [-1], "i64"), self.const("i", [i], "i64"), None
        ends = self.const("end", [i + 1], "i64")
        cut = self.op("Slice", [x, starts, ends, axes], "col")
        return cut if keep else self.op("Squeeze", [cut, axes], "col")

    def decode(self, deltas: str, boxes: str, weights: tuple[float, ...]) -> str:
        """decode_boxes(deltas, boxes, weights): (..., 4) from (..., 4) and (..., 4)."""
        corners = [self.column(boxes, i, keep=True) for i in range(4)]
        d = [self.column(deltas, i, keep=True) for i in range(4)]
        widths, heights, ctr_x, ctr_y, half = self.centers(corners)
        dx, dy, dw, dh = (self.op("Div", [d[i], self.const("w", weights[i])]) for i in range(4))
        clip = self.const("clip", DELTA_CLIP)
        dw, dh = self.op("Min", [dw, clip]), self.op("Min", [dh, clip])
        cx = self.op("Add", [self.op("Mul", [dx, widths]), ctr_x])
        cy = self.op("Add", [self.op("Mul", [dy, heights]), ctr_y])
        hw = self.op("Mul", [half, self.op("Mul", [self.op("Exp", [dw]), widths])])
        hh = self.op("Mul", [half, self.op("Mul", [self.op("Exp", [dh]), heights])])
        corners = [self.op("Sub", [cx, hw]), self.op("Sub", [cy, hh])]
        corners += [self.op("Add", [cx, hw]), self.op("Add", [cy, hh])]
        return self.op("Concat", corners, "boxes", axis=-1)

    def centers(self, corners: list[str]) -> tuple[str, str, str, str, str]:
        """Widths, heights and centres (x, y) of boxes from their corner columns (..., 1), and
        the constant 0.5 they were found with."""
        x1, y1, x2, y2 = corners
        widths, heights = self.op("Sub", [x2, x1]), self.op("Sub", [y2, y1])
        half = self.const("half", 0.5)
        ctr_x = self.op("Add", [x1, self.op("Mul", [half, widths])])
        ctr_y = self.op("Add", [y1, self.op("Mul", [half, heights])])
        return widths, heights, ctr_x, ctr_y, half

    def encode(self, boxes: str, reference: str, weights: tuple[float, ...]) -> str:
        """encode_boxes(boxes, reference, weights): (..., 4) from (..., 4) and (..., 4)."""
        ex_w, ex_h, ex_x, ex_y, _ = self.centers(
            [self.column(reference, i, True) for i in range(4)]
        )
        w, h, x, y, _ = self.centers([self.column(boxes, i, True) for i in range(4)])
        wx, wy, ww, wh = (self.const("w", v) for v in weights)
        deltas = [
            self.op("Div", [self.op("Mul", [wx, self.op("Sub", [x, ex_x])]), ex_w]),
            self.op("Div", [self.op("Mul", [wy, self.op("Sub", [y, ex_y])]), ex_h]),
            self.op("Mul", [ww, self.op("Log", [self.op("Div", [w, ex_w])])]),
            self.op("Mul", [wh, self.op("Log", [self.op("Div", [h, ex_h])])]),
        ]
        return self.op("Concat", deltas, "deltas", axis=-1)

    def iou(self, boxes1: str, boxes2: str) -> str:
        """box_iou(boxes1, boxes2): (M, K) from (M, 4) and (K, 4)."""
        area1, area2 = self.area(boxes1), self.area(boxes2)
        ax1 = self.const("ax", [1], "i64")
        rows = [self.op("Unsqueeze", [self.slice_last(boxes1, i, i + 2), ax1]) for i in (0, 2)]
        top_left = self.op("Max", [rows[0], self.slice_last(boxes2, 0, 2)])
        bottom_right = self.op("Min", [rows[1], self.slice_last(boxes2, 2, 4)])
        wh = self.op("Max", [self.op("Sub", [bottom_right, top_left]), self.const("zero", 0.0)])
        inter = self.op("Mul", [self.column(wh, 0), self.column(wh, 1)], "inter")
        union = self.op("Sub", [self.op("Add", [self.op("Unsqueeze", [area1, ax1]), area2]), inter])
        return self.op("Div", [inter, union], "iou")

    def area(self, boxes: str) -> str:
        """(x2 - x1) * (y2 - y1) of boxes (..., 4): (...)."""
        x1, y1, x2, y2 = (self.column(boxes, i) for i in range(4))
        return self.op("Mul", [self.op("Sub", [x2, x1]), self.op("Sub", [y2, y1])], "area")

    def clip(self, boxes: str, height: int, width: int) -> str:
        """clip_boxes(boxes, height, width)."""
        low = self.op("Max", [boxes, self.const("zero", 0.0)])
        return self.op("Min", [low, self.const("size", [width, height, width, height])])

    def sizes_at_least(self, boxes: str, min_size: float) -> str:
        """A bool (...) of the boxes whose width and height are both at least min_size."""
        x1, y1, x2, y2 = (self.column(boxes, i) for i in range(4))
        least = self.const("min", min_size)
        wide = self.op("GreaterOrEqual", [self.op("Sub", [x2, x1]), least])
        return self.op("And", [wide, self.op("GreaterOrEqual", [self.op("Sub", [y2, y1]), least])])

    def slice_last(self, x: str, start: int, end: int) -> str:
        """x[..., start:end]."""
        ends = self.const("end", [end], "i64")
        axes = self.const("axis", [-1], "i64")
        return self.op("Slice", [x, self.const("start", [start], "i64"), ends, axes], "cut")
