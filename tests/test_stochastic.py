"""reparameterize: a sample of N(mu, exp(logvar)) while training, the mean in eval mode (and in
ONNX, which the parity test checks); and the VAE spec built on it learns."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import ROOT

import dslc

SOURCE = """
model Sampler {
    input mu: f32[N, 4]
    input logvar: f32[N, 4]
    output z = reparameterize(mu, logvar)
}
"""


def test_training_mode_samples_the_gaussian():
    model = dslc.compile_source(SOURCE).torch_module().train()
    mu = torch.tensor([0.0, 1.0, -2.0, 3.0]).expand(200_000, 4)
    logvar = torch.log(torch.tensor([1.0, 4.0, 0.25, 9.0])).expand(200_000, 4)
    torch.manual_seed(0)
    z = model(mu, logvar)
    assert z.mean(0).tolist() == pytest.approx([0.0, 1.0, -2.0, 3.0], abs=0.02)
    assert z.var(0).tolist() == pytest.approx([1.0, 4.0, 0.25, 9.0], rel=0.02)
    assert not torch.equal(z, model(mu, logvar)), "a new sample on each call"


def test_gradients_reach_mu_and_logvar():
    model = dslc.compile_source(SOURCE).torch_module().train()
    mu = torch.zeros(3, 4, requires_grad=True)
    logvar = torch.zeros(3, 4, requires_grad=True)
    model(mu, logvar).sum().backward()
    assert torch.equal(mu.grad, torch.ones(3, 4))
    assert logvar.grad.abs().sum() > 0


def test_eval_mode_is_the_mean():
    model = dslc.compile_source(SOURCE).torch_module().eval()
    mu, logvar = torch.randn(5, 4), torch.randn(5, 4)
    assert torch.equal(model(mu, logvar), mu)


def test_vae_learns_the_digits():
    """A few epochs of the spec's own loss and optimizer on scikit-learn's digits lower the
    negative ELBO per example well below where it starts."""
    datasets = pytest.importorskip("sklearn.datasets")
    images = torch.tensor(datasets.load_digits().data / 16.0, dtype=torch.float32)
    ns = dslc.load(ROOT / "specs/vae.dl").torch_namespace()
    torch.manual_seed(0)
    model, loss_fn = ns["create_model"]().train(), ns["create_loss"]()
    optimizer = ns["create_optimizer"](model)

    def elbo_loss(batch: torch.Tensor) -> torch.Tensor:
        recon, mu, logvar = model(batch)
        values = {"recon": recon, "image": batch, "mu": mu, "logvar": logvar}
        return loss_fn(*(values[k] for k in ns["LOSS_INPUTS"]))

    with torch.no_grad():
        start = elbo_loss(images).item() / len(images)
    for _ in range(5):
        for batch in images[torch.randperm(len(images))].split(ns["TRAINING"]["batch_size"]):
            optimizer.zero_grad()
            elbo_loss(batch).backward()
            optimizer.step()
    with torch.no_grad():
        end = elbo_loss(images).item() / len(images)
    assert start > 64 * math.log(2) * 0.9  # about uniform pixels at first
    assert end < 0.75 * start, (start, end)
