"""Stochastic layers: random while training, deterministic in inference (eval mode and ONNX),
like dropout."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ops.base import OpDef, expect_float, register


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
