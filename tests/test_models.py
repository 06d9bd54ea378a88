"""Facts about the course's models that the compiler must get right."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import ROOT, SPECS, params_for

import dslc
from dslc.runtime.parity import random_inputs

XOR_X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])


def test_lenet5_has_61706_parameters():
    spec = dslc.load(ROOT / "specs/lenet5.dl")
    assert spec.param_count == 61_706
    model = spec.torch_module()
    assert sum(p.numel() for p in model.parameters()) == 61_706


@pytest.mark.parametrize(
    "name, count",
    [
        ("resnet18", 11_689_512),
        ("resnet50", 25_557_032),
        ("googlenet", 6_624_904),
        ("vgg16", 138_357_544),
    ],
)
def test_the_papers_networks_have_their_parameter_counts(name, count):
    """The compiler's count at the paper's input size, and the generated module's, at the
    smaller test size (the counts do not depend on the input size)."""
    path = ROOT / "specs" / f"{name}.dl"
    assert dslc.load(path).param_count == count
    model = dslc.load(path, params_for(path)).torch_module()
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize(
    "name, gmacs",
    [("resnet18", 1.81), ("resnet50", 4.09), ("googlenet", 1.50), ("vgg16", 15.47)],
)
def test_multiply_accumulates_match_torchvisions_published_counts(name, gmacs):
    """torchvision's model cards list these operation counts (in GFLOPS, counting MACs) at
    224x224; the compiler's own count, from each op's rule, must round to the same."""
    summary = dslc.load(ROOT / "specs" / f"{name}.dl").summary()
    total = int(summary.split("MACs per example: ")[1].split()[0].replace(",", ""))
    assert round(total / 1e9, 2) == gmacs


def test_summary_shows_blocks_with_subtotals():
    graph = dslc.load(ROOT / "specs/resnet18.dl").graph
    lines = dslc.load(ROOT / "specs/resnet18.dl").summary().splitlines()
    stage = next(line for line in lines if line.startswith("layer2 "))
    assert "nn.Sequential" in stage and "(N, 128, 28, 28)" in stage
    inside = sum(math.prod(p.shape) for k, p in graph.parameters() if k.startswith("layer2."))
    assert f"{inside:,}" in stage
    assert any(line.startswith("  0 ") and "BasicBlock" in line for line in lines)
    assert any(line.startswith("    conv1 ") and "conv2d" in line for line in lines)


def test_lenet5_shapes_follow_the_paper():
    graph = dslc.load(ROOT / "specs/lenet5.dl").graph
    shapes = [
        tuple(map(str, n.output.type.shape[1:]))
        for n in graph.nodes
        if n.op.name in ("conv2d", "max_pool2d")
    ]
    assert shapes == [("6", "28", "28"), ("6", "14", "14"), ("16", "10", "10"), ("16", "5", "5")]


def train_on_xor(spec_name: str, seed: int = 0) -> float:
    """Train the generated module with the spec's own loss, optimizer and epochs (full batch of
    the four points, as batch_size = 4 says); return the accuracy."""
    ns = dslc.load(ROOT / "specs" / spec_name).torch_namespace()
    assert ns["TRAINING"]["batch_size"] == 4
    torch.manual_seed(seed)
    model, loss_fn = ns["create_model"](), ns["create_loss"]()
    optimizer = ns["create_optimizer"](model)
    for _ in range(ns["TRAINING"]["epochs"]):
        optimizer.zero_grad()
        loss_fn(model(XOR_X), XOR_Y).backward()
        optimizer.step()
    with torch.no_grad():
        return ((model(XOR_X) > 0).float() == XOR_Y).float().mean().item()


def test_a_2_2_1_mlp_learns_xor():
    assert train_on_xor("xor.dl") == 1.0


def test_a_perceptron_cannot_learn_xor():
    """No line separates XOR's classes: at most 3 of the 4 points are right, whatever the seed."""
    for seed in range(3):
        assert train_on_xor("perceptron.dl", seed) <= 0.75


def test_generated_modules_train_one_step():
    """Every spec with a train section: its loss and optimizer run a step that changes weights."""

    for path in SPECS:
        spec = dslc.load(path, params_for(path))
        if spec.graph.training is None:
            continue
        ns = spec.torch_namespace()
        torch.manual_seed(0)
        model = ns["create_model"]().train()
        loss_fn, opt = ns["create_loss"](), ns["create_optimizer"](model)
        rng = np.random.default_rng(0)
        inputs = random_inputs(spec.graph.inputs, 4, rng)
        targets = random_inputs(spec.graph.training.targets, 4, rng)
        # float targets (and inputs, an autoencoder's targets) as probabilities in (0, 1),
        # which every loss accepts (bce needs them)
        inputs, targets = (
            {k: 1 / (1 + np.exp(-a)) if a.dtype.kind == "f" else a for k, a in d.items()}
            for d in (inputs, targets)
        )
        before = [p.detach().clone() for p in model.parameters()]
        outputs = model(*(torch.from_numpy(a) for a in inputs.values()))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        by_name = dict(zip(spec.graph.outputs, outputs, strict=True))
        known = {**{k: torch.from_numpy(a) for k, a in {**inputs, **targets}.items()}, **by_name}
        loss = loss_fn(*(known[k] for k in ns["LOSS_INPUTS"]))
        if ns["penalty"](model) is not None:
            loss = loss + ns["penalty"](model)
        assert loss.ndim == 0 and torch.isfinite(loss), path.name
        loss.backward()
        opt.step()
        assert any(
            not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)
        ), path.name
