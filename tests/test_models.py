"""Facts about the course's models that the compiler must get right."""

from __future__ import annotations

import numpy as np
import torch
from conftest import ROOT

import dslc
from dslc.verify import random_inputs

XOR_X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])


def test_lenet5_has_61706_parameters():
    spec = dslc.load(ROOT / "specs/lenet5.dl")
    assert spec.param_count == 61_706
    model = spec.torch_module()
    assert sum(p.numel() for p in model.parameters()) == 61_706


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

    for path in sorted((ROOT / "specs").glob("*.dl")):
        spec = dslc.load(path)
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
