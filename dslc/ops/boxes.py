"""Box arithmetic as ops of their own, for a detector other than Faster R-CNN (RetinaNet, SSD,
a single-level RPN): decoding deltas into boxes, encoding boxes as deltas, and the IoU matrix.
The arithmetic is box_code.py's, the same helpers and ONNX nodes the rpn and detections ops
use. Boxes are (x1, y1, x2, y2) in the last dim, f32."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ir.types import TensorType
from dslc.ops.base import Attr, OpDef, register
from dslc.ops.box_code import Onnx, helpers
from dslc.ops.elementwise import broadcast

BOXES_HINT = "each box is (x1, y1, x2, y2), four numbers in the last dim"
WEIGHTS = Attr(
    "weights",
    "floats",
    [1.0, 1.0, 1.0, 1.0],
    "the deltas' scale (x, y, w, h): encoding multiplies, decoding divides",
    positive=True,
)
UNIT = (1.0, 1.0, 1.0, 1.0)


def check_boxes(op: str, what: str, t: TensorType, listed: bool = False) -> None:
    """f32 (..., 4); `listed`: a list of boxes, (N, 4)."""
    shape = "[N, 4], a list of boxes" if listed else "[..., 4]"
    if t.dtype != "f32" or t.rank == 0 or t.shape[-1] != 4 or (listed and t.rank != 2):
        hint = f"{BOXES_HINT}; flatten a batch of them first" if listed else BOXES_HINT
        raise SpecError(f"{op}: {what} must be f32{shape}, got {t}", hint=hint)


def check_weights(op: str, a: dict) -> dict:
    if len(a["weights"]) != 4:
        raise SpecError(
            f"{op}: weights has {len(a['weights'])} values, not 4",
            hint="one divisor for each of x, y, w and h: weights=[10, 10, 5, 5]",
        )
    return {**a, "weights": tuple(map(float, a["weights"]))}


def weights_arg(node) -> list[str]:
    weights = node.attrs["weights"]
    return [] if weights == UNIT else [f"weights={weights!r}"]


class BoxCode(OpDef):
    """box_decode and box_encode: two (..., 4) tensors that broadcast, and the weights."""

    family = "detection"
    attrs = (WEIGHTS,)
    helper: str  # box_code's PyTorch helper
    builder: str  # and its ONNX builder, a method of box_code.Onnx

    def resolve(self, ins, a):
        return check_weights(self.name, a)

    def infer(self, ins, a):
        for what, t in zip(self.inputs, ins, strict=True):
            check_boxes(self.name, what, t)
        return broadcast(self.name, *ins)

    def node_helpers(self, node):
        return helpers(self.helper)

    def torch_call(self, node, args, module):
        return f"{self.helper}({', '.join([*args, *weights_arg(node)])})"

    def onnx(self, node, b, ins, outs):
        build = getattr(Onnx(node, b), self.builder)
        b.alias(outs[0], build(ins[0], ins[1], node.attrs["weights"]))


@register
class BoxDecode(BoxCode):
    name = "box_decode"
    doc = (
        "Boxes (..., 4) from deltas (..., 4) relative to reference boxes (..., 4), the two "
        "broadcasting: Faster R-CNN's parameterization, torchvision's BoxCoder.decode. The "
        "centre moves by (dx / wx, dy / wy) times the reference's size and the size scales by "
        "exp(dw / ww), exp(dh / wh), those clamped at log(1000 / 16) (bbox_xform_clip)."
    )
    example = "boxes = box_decode(deltas, anchors, weights=[10, 10, 5, 5])"
    inputs = ("deltas", "boxes")
    helper, builder = "decode_boxes", "decode"


@register
class BoxEncode(BoxCode):
    name = "box_encode"
    doc = (
        "The deltas (..., 4) that box_decode turns the reference boxes (..., 4) into the boxes "
        "(..., 4), the two broadcasting (torchvision's BoxCoder.encode): the centre's offset "
        "in units of the reference's size times (wx, wy), the log of the size ratio times "
        "(ww, wh). A regression target for a detector's box head."
    )
    example = "targets = box_encode(matched, anchors, weights=[10, 10, 5, 5])"
    inputs = ("boxes", "reference")
    helper, builder = "encode_boxes", "encode"


@register
class BoxIou(OpDef):
    name = "box_iou"
    family = "detection"
    doc = (
        "Intersection over union of every box of boxes1 (M, 4) with every box of boxes2 "
        "(K, 4), torchvision.ops.box_iou: (M, K), area of the overlap over area of the union."
    )
    example = "overlaps = box_iou(anchors, gt_boxes)"
    inputs = ("boxes1", "boxes2")

    def infer(self, ins, a):
        for what, t in zip(self.inputs, ins, strict=True):
            check_boxes(self.name, what, t, listed=True)
        return TensorType("f32", (ins[0].shape[0], ins[1].shape[0]))

    torch_helpers = helpers("box_iou")

    def torch_call(self, node, args, module):
        return f"box_iou({', '.join(args)})"

    def onnx(self, node, b, ins, outs):
        b.alias(outs[0], Onnx(node, b).iou(ins[0], ins[1]))
