"""Normalization and dropout."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ir.graph import ParamSpec
from dslc.ops.base import (
    REGISTRY,
    Attr,
    OpDef,
    expect_f32,
    expect_rank,
    known_channels,
    norm_axis,
    register,
)
from dslc.ops.init import Init
from dslc.ops.pycode import Arg, attr, ctor, dim, lit

FROZEN_BATCH_NORM = '''
class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters, all buffers: what a
    pretrained detector's backbone uses (torchvision's FrozenBatchNorm2d)."""

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)
'''


@register
class BatchNorm(OpDef):
    name = "batch_norm"
    family = "norm"
    prefix = "bn"
    module = True
    affine_in_inference = True
    doc = (
        "Batch normalization over dim 1 of (N, C, ...) (torch.nn.BatchNorm1d/2d/3d by rank); "
        "in inference (eval mode, ONNX) it uses the running statistics. With frozen=true "
        "(2D only) the statistics and the affine map are fixed buffers, in training too: "
        "torchvision's FrozenBatchNorm2d, as in a pretrained detector's backbone."
    )
    example = "x -> conv2d(64, 3) -> batch_norm -> relu"
    attrs = (
        Attr("eps", "float", 1e-5, "added to the variance", positive=True),
        Attr("momentum", "float", 0.1, "running statistics update rate", minimum=0.0),
        Attr("frozen", "bool", False, "fixed statistics and affine map, all buffers"),
    )

    def infer(self, ins, a):
        (x,) = ins
        expect_f32(self.name, x)
        expect_rank(self.name, x, (4,) if a["frozen"] else (2, 3, 4, 5), " (N, C, ...)")
        known_channels(self.name, x)
        return x

    def node_helpers(self, node):
        return {"FrozenBatchNorm2d": FROZEN_BATCH_NORM} if node.attrs["frozen"] else {}

    def params(self, ins, a):
        c = (ins[0].shape[1],)
        return {
            "weight": ParamSpec(c, Init("torch_ones"), buffer=a["frozen"]),
            "bias": ParamSpec(c, Init("torch_zeros"), buffer=a["frozen"]),
            "running_mean": ParamSpec(c, Init("torch_zeros"), buffer=True),
            "running_var": ParamSpec(c, Init("torch_ones"), buffer=True),
        }

    def torch_module(self, node):
        if node.attrs["frozen"]:
            return ctor("FrozenBatchNorm2d", dim(node, 0, 1), eps=attr(node, "eps", default=1e-5))
        return ctor(
            f"nn.BatchNorm{max(node.inputs[0].type.rank - 2, 1)}d",
            dim(node, 0, 1),
            eps=attr(node, "eps", default=1e-5),
            momentum=attr(node, "momentum", default=0.1),
        )

    def inference_affine(self, node, weights):
        """Eval-mode batch norm as y = scale * x + shift per channel (float64, for folding)."""
        w, bias, mean, var = (
            weights[node.key(k)].astype("float64")
            for k in ("weight", "bias", "running_mean", "running_var")
        )
        scale = w / (var + node.attrs["eps"]) ** 0.5
        return scale, bias - mean * scale

    def onnx(self, node, b, ins, outs):
        stats = [b.param(node, k) for k in ("weight", "bias", "running_mean", "running_var")]
        b.add(node, "BatchNormalization", [ins[0], *stats], outs, epsilon=node.attrs["eps"])


NORM_ATTRS = (
    Attr("eps", "float", 1e-5, "added to the variance", positive=True),
    Attr("dims", "int", 1, "how many trailing dims to normalize over", positive=True),
)


# A module, not a movedim around nn.LayerNorm in forward, so that it may stand in an
# nn.Sequential (ConvNeXt's downsampling layers); torchvision's LayerNorm2d, for any axis.
CHANNEL_LAYER_NORM = '''
class ChannelLayerNorm(nn.LayerNorm):
    """Layer norm over one dim, `axis`, that is not the last: channels-first (N, C, H, W) for
    axis 1, as ConvNeXt normalizes (torchvision's LayerNorm2d)."""

    def __init__(self, channels, eps=1e-5, axis=1):
        super().__init__(channels, eps=eps)
        self.axis = axis

    def forward(self, x):
        return super().forward(x.movedim(self.axis, -1)).movedim(-1, self.axis)
'''


@register
class LayerNorm(OpDef):
    name = "layer_norm"
    family = "norm"
    prefix = "ln"
    module = True
    doc = (
        "Layer normalization over the last `dims` dims, with a learned scale and shift "
        "(torch.nn.LayerNorm); or, with `axis`, over that one dim, as ConvNeXt normalizes the "
        "channels of (N, C, H, W) (axis=1)."
    )
    example = "x -> layer_norm"
    attrs = (
        *NORM_ATTRS,
        Attr("axis", "int", None, "normalize over this one dim instead (channels-first: 1)"),
    )

    def resolve(self, ins, a):
        if a["axis"] is None:
            return a
        if a["dims"] != 1:
            raise SpecError("layer_norm: give axis or dims, not both")
        return {**a, "axis": norm_axis(self.name, a["axis"], ins[0].rank)}

    def positions(self, node, flow):
        a = node.attrs
        return flow.mixes(node, (a["axis"],) if a["axis"] is not None else range(-a["dims"], 0))

    def infer(self, ins, a):
        (x,) = ins
        expect_f32(self.name, x)
        if a["axis"] is not None:
            if not isinstance(x.shape[a["axis"]], int):
                raise SpecError(f"layer_norm over axis {a['axis']} needs it known, got {x}")
            return x
        tail = x.shape[x.rank - a["dims"] :] if a["dims"] <= x.rank else None
        if tail is None or not all(isinstance(d, int) for d in tail):
            if a["dims"] > x.rank:
                raise SpecError(
                    f"layer_norm: dims={a['dims']} is more than the input's rank {x.rank}"
                )
            raise SpecError(f"layer_norm over the last {a['dims']} dims needs them known, got {x}")
        return x

    def params(self, ins, a):
        x = ins[0]
        shape = (x.shape[a["axis"]],) if a["axis"] is not None else tuple(x.shape[-a["dims"] :])
        return {
            "weight": ParamSpec(shape, Init("torch_ones")),
            "bias": ParamSpec(shape, Init("torch_zeros")),
        }

    def node_helpers(self, node):
        return {} if _inner_axis(node) is None else {"ChannelLayerNorm": CHANNEL_LAYER_NORM}

    def torch_module(self, node):
        eps = attr(node, "eps", default=1e-5)
        axis = _inner_axis(node)
        if axis is None:
            return ctor("nn.LayerNorm", _normalized(node), eps=eps)
        return ctor("ChannelLayerNorm", _normalized(node), eps=eps, axis=Arg(axis, default=1))

    def onnx(self, node, b, ins, outs):
        axis = _inner_axis(node)
        if axis is None:
            self._last_dims(node, b, ins[0], outs[0])
            return
        perm = [i for i in range(node.inputs[0].type.rank) if i != axis] + [axis]
        back = sorted(range(len(perm)), key=perm.__getitem__)
        moved = b.add(node, "Transpose", ins, [b.temp(node, "moved")], perm=perm)
        normed = self._last_dims(node, b, moved, b.temp(node, "normed"))
        b.add(node, "Transpose", [normed], outs, perm=back)

    def _last_dims(self, node, b, x: str, out: str) -> str:
        """x normalized over its last `dims` dims (1 where `axis` moved that dim last)."""
        ins, outs = [x], [out]
        w, bias = b.param(node, "weight"), b.param(node, "bias")
        dims = node.attrs["dims"]
        if b.fused:
            return b.add(
                node,
                "LayerNormalization",
                [ins[0], w, bias],
                outs,
                axis=-dims,
                epsilon=node.attrs["eps"],
            )
        mean = b.add(node, "ReduceMean", [ins[0], _last(node, b, dims)], [b.temp(node, "mean")])
        centred = b.add(node, "Sub", [ins[0], mean], [b.temp(node, "centred")])
        scaled = _divide_by_rms(node, b, centred, dims)
        shifted = b.add(node, "Mul", [scaled, w], [b.temp(node, "scaled")])
        return b.add(node, "Add", [shifted, bias], outs)


def _inner_axis(node) -> int | None:
    """The `axis` of a layer norm over a dim that is not the last (None: the usual kind)."""
    axis = node.attrs.get("axis")
    return None if axis is None or axis == node.inputs[0].type.rank - 1 else axis


def _normalized(node) -> Arg:
    """normalized_shape: the last dim (as a number), or the last `dims` dims (a list), or the
    `axis` dim."""
    if node.attrs.get("axis") is not None:
        return dim(node, 0, node.attrs["axis"])
    if node.attrs["dims"] == 1:
        return dim(node, 0, -1)
    return lit(list(node.inputs[0].type.shape[-node.attrs["dims"] :]))


def _last(node, b, dims: int) -> str:
    return b.const(node, "axes", list(range(-dims, 0)), "i64")


def _divide_by_rms(node, b, x: str, dims: int) -> str:
    """x / sqrt(mean(x^2) + eps) over the last `dims` dims (basic ops, for --decompose)."""
    square = b.add(node, "Mul", [x, x], [b.temp(node, "square")])
    mean = b.add(node, "ReduceMean", [square, _last(node, b, dims)], [b.temp(node, "mean_square")])
    eps = b.const(node, "eps", node.attrs["eps"], "f32")
    var = b.add(node, "Add", [mean, eps], [b.temp(node, "var")])
    rms = b.add(node, "Sqrt", [var], [b.temp(node, "rms")])
    return b.add(node, "Div", [x, rms], [b.temp(node, "normalized")])


@register
class RmsNorm(OpDef):
    name = "rms_norm"
    family = "norm"
    prefix = "rms"
    module = True
    doc = (
        "Root-mean-square normalization over the last `dims` dims: x / sqrt(mean(x^2) + eps) "
        "times a learned scale, no centring or shift (torch.nn.RMSNorm; LLaMA's norm)."
    )
    example = "x -> rms_norm"
    attrs = NORM_ATTRS

    def positions(self, node, flow):
        return flow.mixes(node, range(-node.attrs["dims"], 0))

    def infer(self, ins, a):
        return REGISTRY["layer_norm"].infer(ins, {**a, "axis": None})

    def params(self, ins, a):
        return {"weight": ParamSpec(tuple(ins[0].shape[-a["dims"] :]), Init("torch_ones"))}

    def torch_module(self, node):
        return ctor("nn.RMSNorm", _normalized(node), eps=attr(node, "eps"))

    def onnx(self, node, b, ins, outs):
        w, dims = b.param(node, "weight"), node.attrs["dims"]
        if b.fused:
            b.add(
                node, "RMSNormalization", [ins[0], w], outs, axis=-dims, epsilon=node.attrs["eps"]
            )
            return
        b.add(node, "Mul", [_divide_by_rms(node, b, ins[0], dims), w], outs)


@register
class Dropout(OpDef):
    name = "dropout"
    family = "norm"
    prefix = "drop"
    module = True
    doc = (
        "Zeroes elements with probability p while training, scaling the rest by 1/(1-p); "
        "identity in inference."
    )
    example = "x -> dropout(0.5)"
    attrs = (
        Attr("p", "float", 0.5, "probability of zeroing an element", minimum=0.0, maximum=1.0),
    )

    def positions(self, node, flow):
        return flow.same(node, keeps="identity")  # in eval

    def infer(self, ins, a):
        return ins[0]

    def torch_module(self, node):
        return ctor("nn.Dropout", attr(node, "p"))

    def onnx(self, node, b, ins, outs):
        b.alias(outs[0], ins[0])
