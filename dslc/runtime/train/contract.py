"""What the trainer needs from a compiled spec: the generated module's training contract
(INPUTS, TARGETS, OUTPUTS, TOKENS, TRAINING, LOSS_INPUTS, METRICS, create_model, create_loss,
penalty, create_optimizer, create_scheduler), read once into one object, so the loop never
looks anything up by name. One thing the module does not state is read from the IR: whether the
loss is a batch mean or a batch sum."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dslc.api import Spec
from dslc.errors import DslcError

Signature = dict[str, tuple[str, tuple[int | str, ...]]]  # name -> (torch dtype, shape)


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
    create_scheduler: Callable[[Any, int, int], Any]
    reduction: str  # how the loss reduces over the batch: "mean", "sum" or "mixed"
    tokens: dict[str, int]  # integer inputs read by an embedding -> vocabulary (language models)
    ignore: dict[str, int]  # class-index target -> the value that counts for nothing (padding)
    schedule_steps: str = "step"  # when create_scheduler's schedule steps: each "step" or "epoch"
    # A loss of several terms: each term on its own, unweighted, by name (loss_<output>), as
    # (a function of the batch's example count and tensors giving the batch's total, the names
    # of the tensors it takes); empty for a loss of one term.
    terms: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = field(default_factory=dict)
    # Regression terms (mse, l1, huber, smooth_l1): prediction -> target, for MAE and RMSE.
    regressions: dict[str, str] = field(default_factory=dict)
    transforms: dict[str, Any] = field(default_factory=dict)  # image pipelines, from the IR
    # A detector (outputs of the `detections` op): its role (boxes, scores, labels, images)
    # -> the output's name, and how many classes its class logits score, background included.
    detections: dict[str, str] = field(default_factory=dict)
    object_classes: int | None = None

    def override(self, key: str, value: Any) -> None:
        """A setting from the command line, recorded where the run's settings are read."""
        self.training[key] = value

    @property
    def arrays(self) -> Signature:
        """What a data set holds: the model inputs, then the targets."""
        return {**self.inputs, **self.targets}

    @property
    def classes(self) -> dict[str, tuple[str, int]]:
        """Class-index array -> (the prediction it indexes, how many classes), for every
        classification term of the loss (METRICS lists them). The class dim is dim 1, or the
        last where the target drops that one (a language model's (N, T, V) logits); when
        both fit, the two dims have the same size. A symbolic class dim is left out."""
        found: dict[str, tuple[str, int]] = {}
        for output, target in self.metrics.values():
            if output not in self.outputs or target not in self.arrays:
                continue
            shape, drops = self.outputs[output][1], self.arrays[target][1]
            if len(shape) < 2:
                continue
            dim = 1 if (shape[0], *shape[2:]) == tuple(drops) else -1
            count = shape[dim]
            if isinstance(count, int) and (target not in found or count < found[target][1]):
                found[target] = (output, count)
        return found


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
        targets=ns["TARGETS"],
        outputs=ns["OUTPUTS"],
        training=ns["TRAINING"],
        loss_inputs=tuple(ns["LOSS_INPUTS"]),
        metrics=dict(ns["METRICS"]),
        create_model=ns["create_model"],
        create_loss=ns["create_loss"],
        create_optimizer=ns["create_optimizer"],
        penalty=ns["penalty"],
        create_scheduler=ns["create_scheduler"],
        reduction=_reduction(spec),
        tokens=dict(ns.get("TOKENS", {})),
        ignore=dict(ns.get("IGNORE_INDEX", {})),
        schedule_steps=ns.get("SCHEDULE_STEPS", "step"),
        terms=_terms(spec, ns),
        regressions=_regressions(spec),
        transforms=dict(spec.graph.training.transforms) if spec.graph.training else {},
        **_detector(spec),
    )


def _detector(spec: Spec) -> dict[str, Any]:
    """The model outputs a `detections` node gives, by role, and the classes of its class
    logits (K, C), background included: the labels a detection target may hold are 1..C-1."""
    g = spec.graph
    names = {id(v): k for k, v in g.outputs.items()}
    for node in g.nodes:
        if not node.op.detection_outputs:  # an op that declares its outputs detections
            continue
        logits = node.inputs[node.op.inputs.index("class_logits")].type.shape[1]
        kinds = node.op.detection_outputs
        roles = {r: names.get(id(v)) for r, v in zip(kinds, node.outputs, strict=True)}
        if all(roles.values()):
            found = {r: n for r, n in roles.items() if n is not None}
            return {"detections": found, "object_classes": logits}
    return {}


def _reduction(spec: Spec) -> str:
    """Per-example losses and data-parallel weighting need to know whether the loss is a batch
    mean or a batch sum; the generated module does not say, the IR's loss terms do."""
    training = spec.graph.training
    terms = training.loss if training else []
    kinds = {"sum" if t.attrs.get("reduction") == "sum" else "mean" for t in terms}  # batchmean
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _spec_names(spec: Spec) -> dict[int, str]:
    """Each value a loss term can read -> its name in INPUTS, OUTPUTS or TARGETS."""
    g, training = spec.graph, spec.graph.training
    names = {id(v): v.name for v in g.inputs} | {id(v): k for k, v in g.outputs.items()}
    return names | {id(v): v.name for v in (training.targets if training else [])}


def _terms(spec: Spec, ns: dict[str, Any]) -> dict[str, tuple[Callable[..., Any], tuple[str, ...]]]:
    """Per-output losses for metrics.jsonl: each term's PyTorch call, written by its op (the
    same code as in the generated Loss.forward), made a function of its tensors that gives
    the batch's total."""
    training = spec.graph.training
    terms = training.loss if training else []
    if len(terms) < 2:
        return {}
    names = _spec_names(spec)
    found: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {}
    for term in terms:
        args = tuple(names[id(v)] for v in term.inputs)
        key = (
            f"loss_{args[0]}"
            if f"loss_{args[0]}" not in found
            else f"loss_{args[0]}_{term.op.name}"
        )
        while key in found:
            key += "_"
        params = [f"t{i}" for i in range(len(args))]
        call = term.op.torch_call(term, params, None)
        if term.attrs.get("reduction") != "sum":  # a batch mean: times the examples, which
            call = f"({call}) * examples"  # the prediction's dim 0 need not count (a detector's)
        fn = eval(f"lambda examples, {', '.join(params)}: {call}", ns)
        found[key] = (fn, args)
    return found


def _regressions(spec: Spec) -> dict[str, str]:
    training = spec.graph.training
    names = _spec_names(spec)
    terms = [t for t in (training.loss if training else []) if t.op.regresses]
    return {names[id(t.inputs[0])]: names[id(t.inputs[1])] for t in terms}
