"""What the trainer needs from a compiled spec: the generated module's training contract
(INPUTS, TARGETS, OUTPUTS, TRAINING, LOSS_INPUTS, METRICS, create_model, create_loss, penalty,
create_optimizer, create_scheduler), read once into one object.

Older generated modules lack some names (OUTPUTS, LOSS_INPUTS, METRICS, penalty,
create_scheduler, the newer TRAINING keys); each has a fallback here that gives the meaning
the contract specifies, so the loop never looks anything up by hand."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dslc.api import Spec
from dslc.errors import DslcError

Signature = dict[str, tuple[str, tuple[int | str, ...]]]  # name -> (torch dtype, shape)

DEFAULTS = {
    "batch_size": 32,
    "epochs": 10,
    "grad_clip": None,
    "early_stopping": None,
    "monitor": "val_loss",
}


@dataclass
class Contract:
    name: str
    inputs: Signature
    targets: Signature
    outputs: Signature
    training: dict[str, Any]
    loss_inputs: tuple[str, ...]
    metrics: dict[str, tuple[str, str]]
    create_model: Callable[[], Any]
    create_loss: Callable[[], Any]
    create_optimizer: Callable[[Any], Any]
    penalty: Callable[[Any], Any]
    create_scheduler: Callable[[Any, int], Any]
    reduction: str  # how the loss reduces over the batch: "mean", "sum" or "mixed"
    namespace: dict[str, Any]

    def override(self, key: str, value: Any) -> None:
        """A setting from the command line. The generated module's functions read TRAINING
        when called (one_cycle's total steps are epochs * steps_per_epoch), so write it
        there too."""
        self.training[key] = value
        if "TRAINING" in self.namespace:
            self.namespace["TRAINING"][key] = value

    @property
    def arrays(self) -> Signature:
        """What a data set holds: the model inputs, then the targets."""
        return {**self.inputs, **self.targets}


def contract(spec: Spec) -> Contract:
    """The training contract of `spec`; a DslcError if the spec has no train section."""
    ns = spec.torch_namespace()
    if "create_loss" not in ns or "create_optimizer" not in ns:
        raise DslcError(
            f"{spec.path}: model {spec.name} has no train section, so there is nothing to train",
            hint="add `train { target ...; loss = ...; optimizer = ... }` to the spec",
        )
    return Contract(
        name=spec.name,
        inputs=ns["INPUTS"],
        targets=ns.get("TARGETS", {}),
        outputs=ns.get("OUTPUTS") or _outputs(spec),
        training={**DEFAULTS, **ns.get("TRAINING", {})},
        loss_inputs=tuple(ns.get("LOSS_INPUTS") or _loss_inputs(ns["Loss"])),
        metrics=dict(ns.get("METRICS", {})),
        create_model=ns["create_model"],
        create_loss=ns["create_loss"],
        create_optimizer=ns["create_optimizer"],
        penalty=ns.get("penalty", lambda model: None),
        create_scheduler=ns.get("create_scheduler", lambda optimizer, steps: None),
        reduction=_reduction(spec),
        namespace=ns,
    )


def _outputs(spec: Spec) -> Signature:
    from dslc.types import DTYPES

    return {
        name: (
            DTYPES[v.type.dtype][1],
            tuple(d if isinstance(d, int) else str(d) for d in v.type.shape),
        )
        for name, v in spec.graph.outputs.items()
    }


def _reduction(spec: Spec) -> str:
    """Per-example losses and data-parallel weighting need to know whether the loss is a batch
    mean or a batch sum; the generated module does not say, the IR's loss terms do."""
    training = spec.graph.training
    terms = training.loss if training else []
    kinds = {"sum" if t.attrs.get("reduction") == "sum" else "mean" for t in terms}  # batchmean
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _loss_inputs(loss_class: Any) -> tuple[str, ...]:
    """The Loss module's forward parameters are named after the outputs and targets it takes."""
    return tuple(inspect.signature(loss_class.forward).parameters)[1:]
