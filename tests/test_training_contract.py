"""The training contract: what the generated PyTorch module of a spec with a train section
defines for `dslc train` (and any hand-written loop). Each spec's module is executed and its
names checked against each other and against the model they describe."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT, SPECS, params_for

import dslc

TRAINED = [p for p in SPECS if dslc.load(p).graph.training is not None]


@pytest.fixture(params=TRAINED, ids=lambda p: p.stem)
def generated(request):
    spec = dslc.load(request.param.relative_to(ROOT), params_for(request.param))
    ns: dict = {}
    exec(compile(spec.torch_source(), str(request.param), "exec"), ns)
    return spec, ns


def _example(signature: dict, n: int = 3) -> dict[str, torch.Tensor]:
    """Random tensors for a signature (symbolic dims become n); integers are class indices < 2."""
    out = {}
    for name, (dtype, shape) in signature.items():
        dims = [n if isinstance(d, str) else d for d in shape]
        if dtype.startswith("int") or dtype == "bool":
            out[name] = torch.randint(0, 2, dims, dtype=getattr(torch, dtype))
        else:
            out[name] = torch.rand(dims, dtype=getattr(torch, dtype))
    return out


def test_outputs_are_what_forward_returns(generated):
    _, ns = generated
    torch.manual_seed(0)
    model = ns["create_model"]().eval()
    result = model(**_example(ns["INPUTS"]))
    result = result if isinstance(result, tuple) else (result,)
    assert len(result) == len(ns["OUTPUTS"])
    # the inputs' symbolic dims are 3 (_example); a dim the data sets (a detector's K_rpn, the
    # RoIs kept) is whatever it is, but one size wherever it appears
    sizes = {d: 3 for _, shape in ns["INPUTS"].values() for d in shape if isinstance(d, str)}
    for y, (dtype, shape) in zip(result, ns["OUTPUTS"].values(), strict=True):
        assert str(y.dtype) == f"torch.{dtype}"
        want = [
            sizes.setdefault(d, n) if isinstance(d, str) else d
            for d, n in zip(shape, y.shape, strict=True)
        ]
        assert list(y.shape) == want


def test_loss_inputs_feed_the_loss(generated):
    """LOSS_INPUTS name inputs, outputs or targets, in Loss.forward's order; the loss of a
    forward pass is a finite scalar and has gradients."""
    _, ns = generated
    known = {**ns["INPUTS"], **ns["OUTPUTS"], **ns["TARGETS"]}
    assert set(ns["LOSS_INPUTS"]) <= set(known), ns["LOSS_INPUTS"]
    assert set(ns["TARGETS"]) <= set(ns["LOSS_INPUTS"]), "every target is used by the loss"
    torch.manual_seed(0)
    model = ns["create_model"]()
    inputs = _example(ns["INPUTS"])
    result = model(**inputs)
    result = result if isinstance(result, tuple) else (result,)
    outputs = dict(zip(ns["OUTPUTS"], result, strict=True))
    values = {**inputs, **outputs, **_example(ns["TARGETS"])}
    loss = ns["create_loss"]()(*(values[k] for k in ns["LOSS_INPUTS"]))
    extra = ns["penalty"](model)
    total = loss if extra is None else loss + extra
    assert total.shape == () and torch.isfinite(total)
    total.backward()
    assert any(p.grad is not None for p in model.parameters())


def test_metrics_only_for_classifiers(generated):
    spec, ns = generated
    t = spec.graph.training
    classifiers = [
        term
        for term in t.loss
        if term.op.name in ("cross_entropy", "nll") and term.inputs[1].type.dtype.startswith("i")
    ]
    assert len(ns["METRICS"]) == len(classifiers)
    for prediction, target in ns["METRICS"].values():
        assert prediction in ns["OUTPUTS"] and target in ns["TARGETS"]
        assert len(ns["OUTPUTS"][prediction][1]) == len(ns["TARGETS"][target][1]) + 1


def test_scheduler_and_settings(generated):
    spec, ns = generated
    model = ns["create_model"]()
    optimizer = ns["create_optimizer"](model)
    scheduler = ns["create_scheduler"](optimizer, 10)
    assert (scheduler is None) == (spec.graph.training.schedule is None)
    if scheduler is not None:
        per_epoch = ns.get("SCHEDULE_STEPS") == "epoch"  # reduce-on-plateau: on a metric
        for _ in range(3):
            optimizer.step()
            if per_epoch:
                scheduler.step(1.0)
            else:
                scheduler.step()
        assert all(g["lr"] >= 0 for g in optimizer.param_groups)
    settings = ns["TRAINING"]
    assert settings["batch_size"] > 0 and settings["epochs"] > 0
    assert settings["grad_clip"] is None or settings["grad_clip"] > 0
    assert settings["early_stopping"] is None or settings["early_stopping"] > 0
    assert settings["monitor"] in ("val_loss", "val_accuracy")
    if settings["monitor"] == "val_accuracy":
        assert ns["METRICS"]


def test_no_train_section_no_training_names():
    spec = dslc.load(next(p for p in SPECS if p not in TRAINED))
    ns: dict = {}
    exec(spec.torch_source(), ns)
    assert "OUTPUTS" in ns
    assert not {"TARGETS", "LOSS_INPUTS", "METRICS", "create_scheduler", "penalty"} & set(ns)
