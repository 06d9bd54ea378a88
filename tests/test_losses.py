"""The losses and penalties of the train section, compiled and run: each generated Loss (and
penalty) equals its formula, computed here independently of the generated code."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

import dslc


def generated(loss: str, targets: str = "target t: f32[N, 4]", outputs: int = 1) -> dict:
    heads = "\n".join(f"    output y{i} = h -> linear(4)" for i in range(1, outputs + 1))
    source = f"""
model M {{
    input x: f32[N, 4]
    h = x -> linear(8) -> relu
{heads}
}}
train {{
    {targets}
    loss = {loss}
    optimizer = adam()
}}
"""
    return dslc.compile_source(source).torch_namespace()


def run(ns: dict, **values: torch.Tensor) -> torch.Tensor:
    return ns["create_loss"]()(*(values[k] for k in ns["LOSS_INPUTS"]))


torch.manual_seed(0)
A, B = torch.randn(5, 4), torch.randn(5, 4) * 3


def test_l1():
    assert run(generated("l1(y1, t)"), y1=A, t=B) == pytest.approx((A - B).abs().mean().item())


def huber(d: torch.Tensor, delta: float) -> torch.Tensor:
    return torch.where(d.abs() < delta, 0.5 * d**2, delta * (d.abs() - 0.5 * delta))


def test_huber():
    expected = huber(A - B, 2.0).mean().item()
    assert run(generated("huber(y1, t, delta=2.0)"), y1=A, t=B) == pytest.approx(expected)


def test_smooth_l1_is_huber_over_beta():
    expected = (huber(A - B, 0.5) / 0.5).mean().item()
    assert run(generated("smooth_l1(y1, t, beta=0.5)"), y1=A, t=B) == pytest.approx(expected)


def test_kl_divergence_is_per_example_kl():
    log_p = torch.log_softmax(A, dim=1)
    q = torch.softmax(B, dim=1)
    expected = (q * (q.log() - log_p)).sum(1).mean().item()
    assert run(generated("kl_divergence(y1, t)"), y1=log_p, t=q) == pytest.approx(expected)
    total = run(generated('kl_divergence(y1, t, reduction="sum")'), y1=log_p, t=q)
    assert total == pytest.approx(expected * 5)


@pytest.mark.parametrize(("reduction", "scale"), [("mean", 1.0), ("sum", 5.0)])
def test_gaussian_kl_is_the_kl_to_a_standard_normal(reduction, scale):
    mu, logvar = A, B.clamp(-3, 3)
    ns = generated(f'gaussian_kl(y1, y2, reduction="{reduction}")', targets="", outputs=2)
    assert ns["LOSS_INPUTS"] == ("y1", "y2")
    closed = Normal(mu, (0.5 * logvar).exp())
    expected = kl_divergence(closed, Normal(0.0, 1.0)).sum(1).mean().item() * scale
    assert run(ns, y1=mu, y2=logvar).item() == pytest.approx(expected, rel=1e-5)


def test_a_model_input_can_be_the_target():
    """An autoencoder's loss compares its reconstruction with its input."""
    ns = generated("bce(y1, x)", targets="")
    assert ns["LOSS_INPUTS"] == ("y1", "x") and ns["TARGETS"] == {}
    p, x = torch.sigmoid(A), torch.rand(5, 4)
    expected = -(x * p.log() + (1 - x) * (1 - p).log()).mean().item()
    assert run(ns, y1=p, x=x).item() == pytest.approx(expected, rel=1e-5)


def test_l2_penalty_counts_weights_not_biases():
    ns = generated("mse(y1, t) + 1e-3 * l2() - 0.5 * l2()")
    model = ns["create_model"]()
    weights = [model.fc1.weight, model.fc2.weight]
    expected = (1e-3 - 0.5) * sum((w**2).sum() for w in weights).item()
    assert ns["penalty"](model).item() == pytest.approx(expected, rel=1e-6)
    assert ns["penalty"](model).requires_grad


def test_no_penalty_is_none():
    assert generated("mse(y1, t)")["penalty"](None) is None
