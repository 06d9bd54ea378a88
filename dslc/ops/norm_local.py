"""Normalization within one example, with no batch statistics: group norm, instance norm, and
AlexNet's local response norm. The same in training and inference."""

from __future__ import annotations

import numpy as np

from dslc.diagnostics import SpecError
from dslc.ir.graph import ParamSpec
from dslc.ops.base import (
    Attr,
    OpDef,
    expect_f32,
    expect_float,
    expect_rank,
    known_channels,
    register,
)
from dslc.ops.init import Init
from dslc.ops.pycode import attr, ctor, dim

EPS = Attr("eps", "float", 1e-5, "added to the variance", positive=True)


def affine_params(ins, a) -> dict[str, ParamSpec]:
    """A per-channel scale (ones) and shift (zeros), as PyTorch's affine norms start."""
    if not a["affine"]:
        return {}
    c = (ins[0].shape[1],)
    return {"weight": ParamSpec(c, Init("torch_ones")), "bias": ParamSpec(c, Init("torch_zeros"))}


def scale_and_bias(node, b) -> list[str]:
    """The ONNX scale and bias inputs: the learned ones, or constant ones and zeros."""
    if node.attrs["affine"]:
        return [b.param(node, "weight"), b.param(node, "bias")]
    c = node.inputs[0].type.shape[1]
    return [b.const(node, "ones", np.ones(c), "f32"), b.const(node, "zeros", np.zeros(c), "f32")]


@register
class GroupNorm(OpDef):
    name = "group_norm"
    family = "norm"
    prefix = "gn"
    module = True
    doc = (
        "Group normalization: the channels of (N, C, ...) split into `groups`, each normalized "
        "over its channels and positions per example, then a per-channel scale and shift "
        "(torch.nn.GroupNorm)."
    )
    example = "x -> conv2d(64, 3) -> group_norm(8) -> relu"
    attrs = (
        Attr("groups", "int", doc="number of channel groups; must divide C", positive=True),
        EPS,
        Attr("affine", "bool", True, "learn a per-channel scale and shift"),
    )

    def infer(self, ins, a):
        (x,) = ins
        expect_f32(self.name, x)
        expect_rank(self.name, x, (2, 3, 4, 5), " (N, C, ...)")
        c = known_channels(self.name, x)
        if c % a["groups"]:
            raise SpecError(f"group_norm: {a['groups']} groups do not divide {c} channels")
        return x

    def params(self, ins, a):
        return affine_params(ins, a)

    def torch_module(self, node):
        return ctor(
            "nn.GroupNorm",
            attr(node, "groups"),
            dim(node, 0, 1),
            eps=attr(node, "eps", default=1e-5),
            affine=attr(node, "affine", default=True),
        )

    def onnx(self, node, b, ins, outs):
        a = node.attrs
        b.add(
            node,
            "GroupNormalization",
            [ins[0], *scale_and_bias(node, b)],
            outs,
            num_groups=a["groups"],
            epsilon=a["eps"],
        )


@register
class InstanceNorm(OpDef):
    name = "instance_norm"
    family = "norm"
    prefix = "inorm"
    module = True
    doc = (
        "Instance normalization: each channel of each example normalized over its positions "
        "(torch.nn.InstanceNorm1d/2d/3d by rank, without running statistics)."
    )
    example = "x -> conv2d(32, 3) -> instance_norm -> relu"
    attrs = (EPS, Attr("affine", "bool", False, "learn a per-channel scale and shift"))

    def infer(self, ins, a):
        (x,) = ins
        expect_f32(self.name, x)
        expect_rank(self.name, x, (3, 4, 5), " (N, C, *spatial)")
        known_channels(self.name, x)
        return x

    def params(self, ins, a):
        return affine_params(ins, a)

    def torch_module(self, node):
        return ctor(
            f"nn.InstanceNorm{node.inputs[0].type.rank - 2}d",
            dim(node, 0, 1),
            eps=attr(node, "eps", default=1e-5),
            affine=attr(node, "affine", default=False),
        )

    def onnx(self, node, b, ins, outs):
        inputs = [ins[0], *scale_and_bias(node, b)]
        b.add(node, "InstanceNormalization", inputs, outs, epsilon=node.attrs["eps"])


def channel_window(c: int, size: int) -> np.ndarray:
    """(C, C): row o sums the channels PyTorch's LRN averages for channel o, from o - size//2
    to o + (size-1)//2 (ONNX centres even windows the other way)."""
    o, i = np.arange(c)[:, None], np.arange(c)[None, :]
    return ((i >= o - size // 2) & (i <= o + (size - 1) // 2)).astype(np.float32)


LRN_DEFAULTS = {"alpha": 1e-4, "beta": 0.75, "k": 1.0}


@register
class LocalResponseNorm(OpDef):
    name = "local_response_norm"
    family = "norm"
    prefix = "lrn"
    module = True
    doc = (
        "Local response normalization across channels, as in AlexNet: "
        "x / (k + alpha/size * sum of x^2 over `size` neighbouring channels)^beta "
        "(torch.nn.LocalResponseNorm; even sizes use PyTorch's window)."
    )
    example = "x -> relu -> local_response_norm(5, alpha=1e-4, beta=0.75, k=2.0)"
    attrs = (
        Attr("size", "int", doc="number of neighbouring channels summed", positive=True),
        Attr("alpha", "float", 1e-4, "scale of the sum (divided by size)"),
        Attr("beta", "float", 0.75, "exponent"),
        Attr("k", "float", 1.0, "additive constant"),
    )

    def infer(self, ins, a):
        (x,) = ins
        expect_float(self.name, x)
        expect_rank(self.name, x, (3, 4, 5), " (N, C, *spatial)")
        known_channels(self.name, x)
        return x

    def tables(self, ins, a):
        c, native = ins[0].shape[1], a["size"] % 2 and ins[0].rank == 4  # as onnx() chooses
        return {} if native else {"window": (c, c)}

    def torch_module(self, node):
        return ctor(
            "nn.LocalResponseNorm",
            attr(node, "size"),
            **{k: attr(node, k, default=d) for k, d in LRN_DEFAULTS.items()},
        )

    def onnx(self, node, b, ins, outs):
        a, x = node.attrs, node.inputs[0].type
        if a["size"] % 2 and x.rank == 4:  # what onnxruntime's LRN kernel takes
            lrn = {"size": a["size"], "alpha": a["alpha"], "beta": a["beta"], "bias": a["k"]}
            b.add(node, "LRN", ins, outs, **lrn)
            return
        # The same formula in plain ops: the channel sum is a 1x1 convolution of x^2 with a
        # band of ones, which also places an even window the way PyTorch does.
        band = channel_window(x.shape[1], a["size"]) * (a["alpha"] / a["size"])
        kernel = band.reshape(band.shape + (1,) * (x.rank - 2))
        k, beta = (b.const(node, key, a[key], x.dtype) for key in ("k", "beta"))
        sq = b.add(node, "Mul", [ins[0], ins[0]], [b.temp(node, "square")])
        window = b.const(node, "window", kernel, x.dtype)
        total = b.add(node, "Conv", [sq, window], [b.temp(node, "sum")])
        base = b.add(node, "Add", [total, k], [b.temp(node, "base")])
        denom = b.add(node, "Pow", [base, beta], [b.temp(node, "denom")])
        b.add(node, "Div", [ins[0], denom], outs)
