"""Fully connected layers."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ir.graph import ParamSpec
from dslc.ops.base import Attr, OpDef, expect_f32, register, weighted_macs
from dslc.ops.init import Init, from_attr
from dslc.ops.pycode import attr, ctor, dim

INIT_ATTRS = (
    Attr(
        "init",
        "init",
        "default",
        "weight initializer: a scheme name, a constant, or the values (a nested list that "
        "broadcasts to the weight's shape)",
    ),
    Attr("bias_init", "init", "default", "bias initializer"),
    Attr("trainable", "bool", True, "false: the parameters are frozen, never updated"),
)


@register
class Linear(OpDef):
    name = "linear"
    family = "dense"
    prefix = "fc"
    affine_axis = 0
    channel_dim = -1
    doc = "Affine map y = x W^T + b over the last dim (torch.nn.Linear)."
    example = "x -> linear(120)"
    attrs = (
        Attr("out_features", "int", doc="output size", positive=True),
        Attr("bias", "bool", True, "learn an additive bias"),
        Attr("in_features", "int", None, "expected input size; checked, inferred when omitted"),
        Attr(
            "tie",
            "tensor",
            None,
            "share the weight of the layer that made this tensor (an embedding's, for a language "
            "model's output head): one tensor, counted once",
        ),
        *INIT_ATTRS,
    )
    ties = {"tie": "weight"}
    transposed_params = ("weight",)
    module = True

    def made_dims(self, node):
        return (node.outputs[0].type.rank - 1,)

    def positions(self, node, flow):
        return flow.mixes(node, (-1,))

    def infer(self, ins, a):
        (x,) = ins
        expect_f32(self.name, x)
        if x.rank < 1 or not isinstance(x.shape[-1], int):
            raise SpecError(
                f"linear needs a known feature size in the last dim, got {x}",
                hint="flatten or reshape to a fixed size first",
            )
        if a["in_features"] is not None and a["in_features"] != x.shape[-1]:
            raise SpecError(
                f"linear expects {a['in_features']} input features, got {x.shape[-1]} (input {x})"
            )
        return x.with_shape((*x.shape[:-1], a["out_features"]))

    def params(self, ins, a):
        n_in, n_out = ins[0].shape[-1], a["out_features"]
        p = {}
        if not a["tie"]:
            p["weight"] = ParamSpec((n_out, n_in), from_attr(a["init"], Init("uniform_fan_in")))
        if a["bias"]:
            default = Init("uniform_fan_in", fan_in=n_in)
            p["bias"] = ParamSpec((n_out,), from_attr(a["bias_init"], default, vector=True))
        return p

    def macs(self, node):
        return weighted_macs(node.output.type, node.inputs[0].type.shape[-1])

    def torch_module(self, node):
        return ctor(
            "nn.Linear",
            dim(node, 0, -1),
            attr(node, "out_features"),
            bias=attr(node, "bias", default=True),
        )

    def onnx(self, node, b, ins, outs):
        w = b.param(node, "weight")
        bias = b.param(node, "bias") if node.attrs["bias"] else None
        project(node, b, ins[0], w, bias, outs[0])


def project(node, b, x: str, weight_t: str, bias: str | None, out: str, tag: str = "") -> str:
    """ONNX x W^T (+ bias) over the last dim of x, any rank, as MatMul (and Add) on the weight's
    initializer stored transposed, (in, out) (OpDef.transposed_params): no Transpose at run
    time, and the MatMul that onnxruntime's quantizers recognize (they skip Gemm in dynamic
    mode, and onnxruntime fuses MatMul and Add into Gemm itself). `tag` keeps the temporaries
    of several projections of one node apart (attention's qkv, proj)."""
    if bias is None:
        return b.add(node, "MatMul", [x, weight_t], [out])
    mm = b.add(node, "MatMul", [x, weight_t], [b.temp(node, f"{tag}matmul")])
    return b.add(node, "Add", [mm, bias], [out])
