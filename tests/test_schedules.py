"""Learning-rate schedules: the generated create_scheduler, stepped once per optimizer step,
gives at every step the learning rate of the formula in the schedule's documentation, computed
here independently."""

from __future__ import annotations

import math

import pytest

import dslc
from dslc.diagnostics import CompileError

SPE = 4  # steps per epoch
EPOCHS = 10


def lrs(schedule: str, lr: float = 0.1, epochs: int = EPOCHS, steps: int | None = None):
    """The learning rate of each optimizer step t = 0, 1, ... under the spec's schedule."""
    source = f"""
model M {{
    input x: f32[N, 2]
    output y = x -> linear(1)
}}
train {{
    target t: f32[N, 1]
    loss = mse(y, t)
    optimizer = sgd(lr={lr}, momentum=0.9)
    schedule = {schedule}
    epochs = {epochs}
}}
"""
    ns = dslc.compile_source(source).torch_namespace()
    optimizer = ns["create_optimizer"](ns["create_model"]())
    scheduler = ns["create_scheduler"](optimizer, SPE)
    out = []
    for _ in range(steps or epochs * SPE):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def check(actual: list[float], formula) -> None:
    expected = [formula(t) for t in range(len(actual))]
    assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_step():
    check(lrs("step(step_size=3, gamma=0.5)"), lambda t: 0.1 * 0.5 ** (t // (3 * SPE)))


def test_multistep():
    check(
        lrs("multistep(milestones=[2, 5], gamma=0.1)"),
        lambda t: 0.1 * 0.1 ** sum(t >= m * SPE for m in (2, 5)),
    )


def test_exponential_is_gamma_per_epoch():
    actual = lrs("exponential(gamma=0.5)")
    check(actual, lambda t: 0.1 * 0.5 ** (t / SPE))
    assert actual[SPE] == pytest.approx(0.05) and actual[2 * SPE] == pytest.approx(0.025)


def cosine(t: int, lr: float, warmup: int, min_lr: float, epochs: int = EPOCHS) -> float:
    w, total = warmup * SPE, epochs * SPE
    if t < w:
        return lr * (t + 1) / w
    progress = min(1.0, (t - w) / (total - w))
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2


@pytest.mark.parametrize("warmup", [0, 2])
def test_cosine_with_warmup(warmup):
    actual = lrs(f"cosine(warmup={warmup}, min_lr=0.001)", steps=EPOCHS * SPE + 3)
    check(actual, lambda t: cosine(t, 0.1, warmup, 0.001))
    assert actual[warmup * SPE] == pytest.approx(0.1)  # the peak, after the warmup
    assert actual[-1] == pytest.approx(0.001)  # min_lr at the end, and after it


def one_cycle(t: int, max_lr: float, pct_start: float, total: int) -> float:
    start = max_lr / 25
    end = start / 1e4
    peak = pct_start * total - 1

    def anneal(a: float, b: float, x: float) -> float:
        return b + (a - b) / 2 * (1 + math.cos(math.pi * x))

    if t <= peak:
        return anneal(start, max_lr, t / peak)
    return anneal(max_lr, end, (t - peak) / (total - 1 - peak))


def test_one_cycle():
    check(
        lrs("one_cycle(max_lr=0.5, pct_start=0.25)"),
        lambda t: one_cycle(t, 0.5, 0.25, EPOCHS * SPE),
    )


def test_one_cycle_peaks_at_the_optimizers_lr_by_default():
    actual = lrs("one_cycle()", lr=0.2)
    check(actual, lambda t: one_cycle(t, 0.2, 0.3, EPOCHS * SPE))
    assert max(actual) == pytest.approx(0.2, rel=1e-3)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("multistep(milestones=[5, 2])", "milestones must be increasing"),
        ("multistep(milestones=[4, 10])", "milestone 10 is not less than epochs (10)"),
        ("cosine(warmup=10)", "warmup (10) must be less than epochs (10)"),
        ("cosine(min_lr=0.5)", "min_lr (0.5) must be below the optimizer's lr 0.1"),
        ("exponential(gamma=1.5)", "gamma must be at most 1.0"),
        ("step(step_size=0)", "step_size must be positive"),
        ("cosin(warmup=1)", "unknown schedule 'cosin'"),
        ("0.1", "a schedule is a call such as cosine(warmup=5)"),
    ],
)
def test_schedule_errors(schedule, message):
    with pytest.raises(CompileError) as err:
        lrs(schedule)
    assert message in str(err.value.diagnostics.items[0].message)


def test_cosine_survives_an_epochs_override_that_leaves_no_decay():
    """`dslc train --epochs 1` on a spec with one warmup epoch: the whole run warms up, and
    stepping past the end does not divide by zero."""
    import torch
    from conftest import ROOT

    import dslc

    ns = dslc.load(ROOT / "specs/tiny_gpt.dl").torch_namespace()
    model = ns["create_model"]()
    optimizer = ns["create_optimizer"](model)
    scheduler = ns["create_scheduler"](optimizer, steps_per_epoch=3, epochs=1)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert all(torch.isfinite(torch.tensor(g["lr"])) for g in optimizer.param_groups)
