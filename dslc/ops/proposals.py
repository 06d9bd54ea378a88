"""Region proposals (Ren et al., 2015): Faster R-CNN's region proposal network, torchvision's
RegionProposalNetwork as it runs in eval mode. The head (a 3x3 convolution, then an
objectness logit and four box deltas per anchor) is one set of layers slid over every
feature map, which is why it is one op: the language has no way yet to apply one block's
layers to several tensors. The anchors, decoding and non-maximum suppression are the
detection ops' own code (anchors.py, box_code.py)."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ir.graph import ParamSpec
from dslc.ir.types import TensorType, data_dim
from dslc.ops.anchors import (
    ANCHOR_ATTRS,
    GRID_ANCHORS,
    anchor_attrs,
    grid_shapes,
    level_sizes,
)
from dslc.ops.base import Attr, OpDef, known_channels, register
from dslc.ops.box_code import helpers
from dslc.ops.init import Init
from dslc.ops.proposals_onnx import emit_proposals
from dslc.ops.pycode import attr, ctor, dim, lit

RPN_HEAD = '''
class RPNHead(nn.Module):
    """Faster R-CNN's RPN head (torchvision's RPNHead): a 3x3 convolution and ReLU, then an
    objectness logit and four box deltas per anchor, the same layers on every feature map."""

    def __init__(self, in_channels, num_anchors):
        super().__init__()
        conv = nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU())
        self.conv = nn.Sequential(conv)  # torchvision's keys: conv.0.0.weight
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, features):
        objectness, deltas = [], []
        for feature in features:
            t = self.conv(feature)
            objectness.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return objectness, deltas
'''

RPN = '''
class RegionProposalNetwork(nn.Module):
    """Region proposals (torchvision's RegionProposalNetwork in eval mode): the head scores
    every anchor and regresses a box from it; per image, the best pre_nms_top_n boxes of each
    feature map, clipped to the image, without the tiny ones (min_size) and the unlikely ones
    (score_threshold), through non-maximum suppression map by map, and the best
    post_nms_top_n of what is left (train_pre_nms_top_n and train_post_nms_top_n while
    training, where given: torchvision takes 2000 of each then). RoIs (K, 5): rows (image, x1,
    y1, x2, y2), image by image, best first."""

    def __init__(
        self,
        in_channels,
        sizes,
        aspect_ratios,
        pre_nms_top_n=1000,
        post_nms_top_n=1000,
        nms_threshold=0.7,
        score_threshold=0.0,
        min_size=1e-3,
        train_pre_nms_top_n=None,
        train_post_nms_top_n=None,
    ):
        super().__init__()
        self.head = RPNHead(in_channels, len(sizes[0]) * len(aspect_ratios))
        self.sizes, self.aspect_ratios = sizes, aspect_ratios
        self.pre_nms_top_n, self.post_nms_top_n = pre_nms_top_n, post_nms_top_n
        self.nms_threshold, self.score_threshold = nms_threshold, score_threshold
        self.min_size = min_size
        self.train_top_n = train_pre_nms_top_n, train_post_nms_top_n

    def top_n(self):
        """How many boxes per map before NMS, and proposals after it, in this mode."""
        pre, post = self.train_top_n if self.training else (None, None)
        return pre or self.pre_nms_top_n, post or self.post_nms_top_n

    def forward(self, image, features):
        """RoIs (K, 5), and for the loss every anchor's objectness (N, A) and deltas
        (N, A, 4), and the anchors (A, 4)."""
        objectness, deltas = self.head(features)
        anchors = grid_anchors(image, features, self.sizes, self.aspect_ratios)
        for level, (o, d) in enumerate(zip(objectness, deltas, strict=True)):
            n, _, height, width = o.shape
            objectness[level] = o.permute(0, 2, 3, 1).reshape(n, -1)  # the anchors' order
            d = d.view(n, -1, 4, height, width).permute(0, 3, 4, 1, 2)
            deltas[level] = d.reshape(n, -1, 4)
        rois = self.proposals(image, objectness, deltas, anchors)
        return rois, torch.cat(objectness, 1), torch.cat(deltas, 1), torch.cat(anchors)

    def proposals(self, image, objectness, deltas, anchors):
        pre, post = self.top_n()
        boxes, scores, levels = [], [], []
        for level, (o, d, a) in enumerate(zip(objectness, deltas, anchors, strict=True)):
            o, top = o.detach().sort(dim=1, descending=True, stable=True)  # ties by index
            o, top = o[:, :pre], top[:, :pre]
            d = d.detach().gather(1, top[..., None].expand(-1, -1, 4))
            boxes.append(decode_boxes(d, a[top]))
            scores.append(o)
            levels.append(torch.full_like(top, level))
        boxes = clip_boxes(torch.cat(boxes, 1), image.shape[-2], image.shape[-1])
        scores, levels = torch.cat(scores, 1).sigmoid(), torch.cat(levels, 1)
        rois = []
        for i in range(len(boxes)):
            keep = self.select(boxes[i], scores[i], levels[i])[:post]
            rois.append(torch.cat([torch.full_like(keep[:, None], i), boxes[i][keep]], dim=1))
        return torch.cat(rois)

    def select(self, boxes, scores, levels):
        wh = boxes[:, 2:] - boxes[:, :2]
        kept = (wh >= self.min_size).all(dim=1) & (scores >= self.score_threshold)
        index = torch.nonzero(kept).flatten()
        keep = batched_nms(boxes[index], scores[index], levels[index], self.nms_threshold)
        return index[keep]
'''


@register
class RegionProposals(OpDef):
    name = "rpn"
    family = "detection"
    doc = (
        "Faster R-CNN's region proposal network over an image's feature maps (finest first), "
        "as torchvision's RegionProposalNetwork in eval mode: a shared head (3x3 convolution "
        "and ReLU; per anchor an objectness logit and box deltas, 1x1 convolutions cls_logits "
        "and bbox_pred), anchors as `anchors` lays them out, and per image the pre_nms_top_n "
        "best boxes of each map, decoded, clipped, without those smaller than min_size or "
        "scoring below score_threshold, non-maximum suppression per map at nms_threshold, "
        "and the post_nms_top_n best. The result is the proposals as RoIs (K, 5), rows "
        "(image, x1, y1, x2, y2), image by image and best first; K depends on the data."
    )
    example = "rois = rpn(image, p2, p3, p4, p5, p6, sizes=[32, 64, 128, 256, 512])"
    inputs = ("image", "*features")
    attrs = (
        *ANCHOR_ATTRS,
        Attr(
            "pre_nms_top_n", "int", 1000, "boxes kept per map and image before NMS", positive=True
        ),
        Attr("post_nms_top_n", "int", 1000, "proposals kept per image after NMS", positive=True),
        Attr("train_pre_nms_top_n", "int", None, "pre_nms_top_n while training", positive=True),
        Attr("train_post_nms_top_n", "int", None, "post_nms_top_n while training", positive=True),
        Attr(
            "nms_threshold",
            "float",
            0.7,
            "IoU above which NMS drops a box",
            minimum=0.0,
            maximum=1.0,
        ),
        Attr(
            "score_threshold",
            "float",
            0.0,
            "the least objectness kept (a probability)",
            minimum=0.0,
            maximum=1.0,
        ),
        Attr("min_size", "float", 1e-3, "the least width and height kept, in pixels", minimum=0.0),
    )
    module = True
    leading_output = True  # the RoIs; then, for rpn_loss, objectness, deltas and anchors
    torch_helpers = {
        "grid_anchors": GRID_ANCHORS,
        **helpers("decode_boxes", "clip_boxes", "batched_nms"),
        "RPNHead": RPN_HEAD,
        "RegionProposalNetwork": RPN,
    }

    def resolve(self, ins, a):
        a = anchor_attrs(self.name, a, len(ins) - 1)
        channels = {known_channels(self.name, f) for f in ins[1:]}
        if len(channels) > 1:
            raise SpecError(
                f"rpn: the feature maps have {sorted(channels)} channels; its head is one set "
                "of layers for every map, so they must agree",
                hint="give every level the same channels (an FPN's out_channels)",
            )
        sizes = level_sizes(self.name, a["sizes"], len(ins) - 1)
        if len({len(s) for s in sizes}) > 1:
            raise SpecError("rpn: every feature map needs the same number of anchor sizes")
        return a

    def infer(self, ins, a):
        shapes = grid_shapes(self.name, ins[0], ins[1:])
        if ins[0].dtype != "f32":
            raise SpecError(f"rpn expects an f32 image, got {ins[0]}")
        anchors = sum(h * w for h, w in shapes) * per_cell(a, len(shapes))
        n = ins[1].shape[0]
        return [
            TensorType("f32", (data_dim("K"), 5)),
            TensorType("f32", (n, anchors)),
            TensorType("f32", (n, anchors, 4)),
            TensorType("f32", (anchors, 4)),
        ]

    def params(self, ins, a):
        c = known_channels(self.name, ins[1])
        k = per_cell(a, len(ins) - 1)
        weight, bias = Init("torch_normal_0.01"), Init("torch_zeros")
        shapes = {"head.conv.0.0": (c, c, 3, 3), "head.cls_logits": (k, c, 1, 1)}
        shapes["head.bbox_pred"] = (4 * k, c, 1, 1)
        out: dict[str, ParamSpec] = {}
        for layer, shape in shapes.items():
            out[f"{layer}.weight"] = ParamSpec(shape, weight)
            out[f"{layer}.bias"] = ParamSpec((shape[0],), bias)
        return out

    def macs(self, node):
        total = 0
        c = node.inputs[1].type.shape[1]
        k = per_cell(node.attrs, len(node.inputs) - 1)
        for f in node.inputs[1:]:
            h, w = f.type.shape[2], f.type.shape[3]
            total += h * w * c * (9 * c + 5 * k)  # type: ignore[operator]
        return total

    def torch_param(self, node, key):
        return "nn.Conv2d", key.split(".")[-1]

    def torch_module(self, node):
        sizes = level_sizes(self.name, node.attrs["sizes"], len(node.inputs) - 1)
        return ctor(
            "RegionProposalNetwork",
            dim(node, 1, 1),
            lit(sizes),
            attr(node, "aspect_ratios"),
            pre_nms_top_n=attr(node, "pre_nms_top_n", default=1000),
            post_nms_top_n=attr(node, "post_nms_top_n", default=1000),
            nms_threshold=attr(node, "nms_threshold", default=0.7),
            score_threshold=attr(node, "score_threshold", default=0.0),
            min_size=attr(node, "min_size", default=1e-3),
            train_pre_nms_top_n=attr(node, "train_pre_nms_top_n", default=None),
            train_post_nms_top_n=attr(node, "train_post_nms_top_n", default=None),
        )

    def torch_call(self, node, args, module):
        return f"{module}({args[0]}, [{', '.join(args[1:])}])"

    def onnx(self, node, b, ins, outs):
        emit_proposals(node, b, ins, outs)


def per_cell(a: dict, levels: int) -> int:
    """Anchors per cell: the sizes of one map times the aspect ratios."""
    return len(level_sizes("rpn", a["sizes"], levels)[0]) * len(a["aspect_ratios"])
