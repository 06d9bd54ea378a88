"""Learning-rate schedules: the `schedule = ...` setting of a train section.

The generated `create_scheduler(optimizer, steps_per_epoch, epochs)` is stepped once per optimizer
step, so `t` below counts optimizer steps. Attributes measured in time are in epochs, which read
naturally in a spec and do not depend on the dataset's size; the generated code multiplies them
by steps_per_epoch. `lr` is the optimizer's learning rate and E the `epochs` setting."""

from __future__ import annotations

from typing import Any

from dslc.diagnostics import SpecError
from dslc.ops.base import Attr, OpDef, register

GAMMA = Attr("gamma", "float", 0.1, "factor applied at each decay", positive=True, maximum=1.0)
TOTAL = "epochs * steps_per_epoch"
LR_SCHEDULER = "torch.optim.lr_scheduler"


class Schedule(OpDef):
    family = "schedule"
    inputs = ()
    needs_math = False  # the generated module imports math
    # When the schedule steps: once per optimizer "step", or once per "epoch" with the
    # monitored metric (the generated module says so in SCHEDULE_STEPS).
    steps: str = "step"

    def check(self, a: dict[str, Any], epochs: int, lr: float) -> None:
        """Checks against the epochs setting and the optimizer's learning rate."""

    def torch_factory(self, a: dict[str, Any], lr: float) -> list[str]:
        """The body of create_scheduler(optimizer, steps_per_epoch, epochs)."""
        raise NotImplementedError


@register
class Step(Schedule):
    name = "step"
    doc = "Step decay: lr(t) = lr * gamma^floor(t / (step_size * steps_per_epoch)) (StepLR)."
    example = "schedule = step(step_size=30, gamma=0.1)"
    attrs = (Attr("step_size", "int", doc="epochs between decays", positive=True), GAMMA)

    def torch_factory(self, a, lr):
        size = f"{a['step_size']} * steps_per_epoch"
        return [f"return {LR_SCHEDULER}.StepLR(optimizer, step_size={size}, gamma={a['gamma']!r})"]


@register
class Multistep(Schedule):
    name = "multistep"
    doc = (
        "Decay at given epochs: lr(t) = lr * gamma^k, k = the number of milestones m with "
        "m * steps_per_epoch <= t (MultiStepLR)."
    )
    example = "schedule = multistep(milestones=[8, 11], gamma=0.1)"
    attrs = (
        Attr("milestones", "ints", doc="the epochs at which to decay, increasing", positive=True),
        GAMMA,
    )

    def resolve(self, ins, a):
        m = a["milestones"] if isinstance(a["milestones"], tuple) else (a["milestones"],)
        if list(m) != sorted(set(m)):
            raise SpecError(f"multistep: milestones must be increasing, got {list(m)}")
        return {**a, "milestones": m}

    def check(self, a, epochs, lr):
        if a["milestones"][-1] >= epochs:
            raise SpecError(
                f"multistep: milestone {a['milestones'][-1]} is not less than epochs ({epochs}), "
                "so it never takes effect"
            )

    def torch_factory(self, a, lr):
        epochs = ", ".join(map(str, a["milestones"])) + ("," if len(a["milestones"]) == 1 else "")
        return [
            f"milestones = [epoch * steps_per_epoch for epoch in ({epochs})]",
            f"return {LR_SCHEDULER}.MultiStepLR(optimizer, milestones, gamma={a['gamma']!r})",
        ]


@register
class Exponential(Schedule):
    name = "exponential"
    doc = (
        "Smooth exponential decay by gamma per epoch: lr(t) = lr * gamma^(t / steps_per_epoch) "
        "(ExponentialLR with gamma^(1 / steps_per_epoch) per step)."
    )
    example = "schedule = exponential(gamma=0.95)"
    attrs = (Attr("gamma", "float", doc="decay per epoch", positive=True, maximum=1.0),)

    def torch_factory(self, a, lr):
        return [
            f"gamma = {a['gamma']!r} ** (1 / steps_per_epoch)  # {a['gamma']!r} per epoch",
            f"return {LR_SCHEDULER}.ExponentialLR(optimizer, gamma)",
        ]


@register
class Cosine(Schedule):
    name = "cosine"
    doc = (
        "Linear warmup, then cosine decay to min_lr at the end of training. With W = warmup * "
        "steps_per_epoch and T = E * steps_per_epoch: lr(t) = lr * (t + 1) / W for t < W, else "
        "min_lr + (lr - min_lr) * (1 + cos(pi * min(1, (t - W) / (T - W)))) / 2 (LambdaLR)."
    )
    example = "schedule = cosine(warmup=5, min_lr=1e-5)"
    attrs = (
        Attr("warmup", "int", 0, "epochs of linear warmup from lr / W to lr", minimum=0),
        Attr("min_lr", "float", 0.0, "the learning rate at the end", minimum=0.0),
    )
    needs_math = True

    def check(self, a, epochs, lr):
        if a["warmup"] >= epochs:
            raise SpecError(f"cosine: warmup ({a['warmup']}) must be less than epochs ({epochs})")
        if a["min_lr"] >= lr:
            raise SpecError(f"cosine: min_lr ({a['min_lr']}) must be below the optimizer's lr {lr}")

    def torch_factory(self, a, lr):
        return [
            f"warmup = {a['warmup']} * steps_per_epoch",
            f"total = {TOTAL}",
            f"floor = {a['min_lr']!r} / {lr!r}  # min_lr / lr",
            "",
            "def factor(t):  # the learning rate after t optimizer steps is lr * factor(t)",
            "    if t < warmup:",
            "        return (t + 1) / warmup",
            "    # max(1, ...): `dslc train --epochs` may leave no steps after the warmup",
            "    progress = min(1.0, (t - warmup) / max(1, total - warmup))",
            "    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))",
            "",
            f"return {LR_SCHEDULER}.LambdaLR(optimizer, factor)",
        ]


@register
class OneCycle(Schedule):
    name = "one_cycle"
    doc = (
        "The 1cycle policy (OneCycleLR, cosine annealing), over T = E * steps_per_epoch steps: "
        "from max_lr / div_factor up to max_lr at step P = pct_start * T - 1, then down to "
        "max_lr / (div_factor * final_div_factor) at step T - 1, each phase along "
        "a + (b - a) * (1 - cos(pi * x)) / 2 for x from 0 to 1. The optimizer's lr is not used "
        "unless max_lr is unset; momentum (or Adam's beta1) cycles inversely, 0.95 to 0.85."
    )
    example = "schedule = one_cycle(max_lr=0.1, pct_start=0.25)"
    attrs = (
        Attr(
            "max_lr",
            "float",
            None,
            "the peak learning rate; unset: the optimizer's lr",
            positive=True,
        ),
        Attr(
            "pct_start",
            "float",
            0.3,
            "the fraction of steps spent increasing",
            positive=True,
            maximum=1.0,
        ),
        Attr("div_factor", "float", 25.0, "initial lr = max_lr / div_factor", positive=True),
        Attr(
            "final_div_factor",
            "float",
            1e4,
            "final lr = initial lr / final_div_factor",
            positive=True,
        ),
    )

    def torch_factory(self, a, lr):
        extra = "".join(
            f", {at.name}={a[at.name]!r}" for at in self.attrs[1:] if a[at.name] != at.default
        )
        max_lr = a["max_lr"] if a["max_lr"] is not None else lr
        return [
            f"return {LR_SCHEDULER}.OneCycleLR(",
            f"    optimizer, max_lr={max_lr!r}, total_steps={TOTAL}{extra}",
            ")",
        ]


@register
class Plateau(Schedule):
    name = "plateau"
    doc = (
        "Reduce on plateau (ReduceLROnPlateau): at the end of each epoch, when the monitored "
        "metric (`monitor`) has not improved by more than threshold (relative) for patience "
        "epochs, lr becomes max(lr * factor, min_lr), then waits cooldown epochs. It steps once "
        "per epoch with the monitored value (SCHEDULE_STEPS), not once per optimizer step."
    )
    example = "schedule = plateau(factor=0.5, patience=3)"
    attrs = (
        Attr("factor", "float", 0.1, "what lr is multiplied by", positive=True, maximum=1.0),
        Attr("patience", "int", 10, "epochs without improvement before a reduction", minimum=0),
        Attr("threshold", "float", 1e-4, "the relative change that counts as better", minimum=0.0),
        Attr("cooldown", "int", 0, "epochs to wait after a reduction", minimum=0),
        Attr("min_lr", "float", 0.0, "the lowest learning rate", minimum=0.0),
    )
    steps = "epoch"

    def check(self, a, epochs, lr):
        if a["factor"] == 1.0:
            raise SpecError("plateau: factor 1.0 never changes the learning rate")
        if a["min_lr"] >= lr:
            raise SpecError(
                f"plateau: min_lr ({a['min_lr']}) must be below the optimizer's lr {lr}"
            )

    def torch_factory(self, a, lr):
        extra = "".join(
            f", {at.name}={a[at.name]!r}" for at in self.attrs if a[at.name] != at.default
        )
        return [
            'mode = "max" if TRAINING["monitor"] == "val_accuracy" else "min"  # accuracy: higher',
            f"return {LR_SCHEDULER}.ReduceLROnPlateau(optimizer, mode{extra})",
        ]
