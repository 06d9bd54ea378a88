"""Stochastic layers: random while training, deterministic in inference (eval mode and ONNX),
like dropout."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ops.base import Attr, OpDef, expect_float, register


@register
class Reparameterize(OpDef):
    name = "reparameterize"
    family = "stochastic"
    doc = (
        "The VAE's reparameterization trick: z = mu + exp(0.5 * logvar) * eps, eps ~ N(0, I), "
        "a sample of N(mu, exp(logvar)) through which gradients reach mu and logvar. In eval "
        "mode and in ONNX it is the mean, z = mu, so inference is deterministic."
    )
    example = "z = reparameterize(mu, logvar)"
    inputs = ("mu", "logvar")

    def infer(self, ins, a):
        mu, logvar = ins
        expect_float(self.name, mu)
        if logvar.dtype != mu.dtype or logvar.shape != mu.shape:
            raise SpecError(
                f"reparameterize: mu {mu} and logvar {logvar} must have the same type",
                hint="one mean and one log-variance per latent dim",
            )
        return mu

    def torch_call(self, node, args, module):
        mu, logvar = args
        return f"{mu} + (0.5 * {logvar}).exp() * torch.randn_like({mu}) if self.training else {mu}"

    def onnx(self, node, b, ins, outs):
        b.alias(outs[0], ins[0])


DROP_PATH = '''
def drop_path(x, p, training):
    """Stochastic depth: zero each example's whole x with probability p while training,
    scaling the kept ones by 1/(1-p) (torchvision's stochastic_depth, mode "row")."""
    if not training or p == 0.0:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)
'''


@register
class DropPath(OpDef):
    name = "drop_path"
    family = "stochastic"
    doc = (
        "Stochastic depth (Huang et al., 2016): while training, each example's whole tensor is "
        "zeroed with probability p and the rest scaled by 1/(1-p), so a residual branch is "
        "skipped for that example; identity in eval mode and ONNX. Put it on the branch: "
        "`x + (x -> Block -> drop_path(0.1))`."
    )
    example = "y = x + (x -> mlp -> drop_path(0.1))"
    attrs = (Attr("p", "float", doc="probability of dropping", minimum=0.0, maximum=1.0),)
    torch_helpers = {"drop_path": DROP_PATH}
    forward_attrs = ("p",)

    def positions(self, node, flow):
        return flow.same(node, keeps="identity")  # in eval

    def infer(self, ins, a):
        expect_float(self.name, ins[0])
        return ins[0]

    def torch_call(self, node, args, module):
        return f"drop_path({args[0]}, {node.attrs['p']!r}, self.training)"

    def onnx(self, node, b, ins, outs):
        b.alias(outs[0], ins[0])
