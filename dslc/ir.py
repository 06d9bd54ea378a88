"""The typed IR: a graph of nodes in topological order. Each node applies one registry op to
input Values, with resolved attributes, and produces typed output Values; it carries its
source span and the parameters it owns. `format_graph` is the text form the golden tests diff;
`verify` re-derives every type from the registry's shape rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dslc.diagnostics import Span, SpecError
from dslc.ops.base import OpDef, ParamSpec
from dslc.types import INT_DTYPES, Sym, TensorType

if TYPE_CHECKING:
    from dslc.ops.optim import Optimizer


@dataclass(eq=False)
class Value:
    name: str  # unique in its graph; also the ONNX value name
    type: TensorType
    user_named: bool = False  # named by the spec (an input, target or assignment)

    def describe(self) -> str:
        return f"a tensor {self.type}"


@dataclass(eq=False)
class Node:
    op: OpDef
    name: str  # unique dotted path: "conv1", "res2.conv1"; parameters live at name.param
    inputs: list[Value]
    attrs: dict[str, Any]
    outputs: list[Value]
    span: Span
    params: dict[str, ParamSpec] = field(default_factory=dict)

    @property
    def output(self) -> Value:
        return self.outputs[0]

    def tied(self) -> dict[str, str]:
        """Parameters this node shares with another (weight tying): key -> the owner's
        state_dict key, such as {"weight": "embed.weight"}."""
        return {key: self.attrs[a] for a, key in self.op.ties.items() if self.attrs.get(a)}


@dataclass(eq=False)
class LossTerm:
    op: OpDef
    inputs: list[Value]
    attrs: dict[str, Any]
    weight: float
    span: Span


@dataclass(eq=False)
class Training:
    targets: list[Value]
    loss: list[LossTerm]
    optimizer: tuple[Optimizer, dict[str, Any], Span] | None
    settings: dict[str, Any]
    schedule: tuple[OpDef, dict[str, Any], Span] | None = None
    penalties: list[LossTerm] = field(default_factory=list)  # terms on the weights, no inputs

    def metrics(self) -> dict[str, tuple[Value, Value]]:
        """Accuracy (argmax over dim 1 == target) of each classification term with class-index
        targets: accuracy, accuracy_2, ... -> (prediction, target)."""
        pairs = [
            (term.inputs[0], term.inputs[1])
            for term in self.loss
            if getattr(term.op, "classifies", False) and term.inputs[1].type.dtype in INT_DTYPES
        ]
        return {("accuracy" if i == 0 else f"accuracy_{i + 1}"): p for i, p in enumerate(pairs)}


@dataclass(eq=False)
class Graph:
    name: str
    path: str
    inputs: list[Value]
    outputs: dict[str, Value]
    nodes: list[Node]
    training: Training | None = None
    blocks: dict[str, str] = field(default_factory=dict)  # instance path -> block name
    # For a part of a model (ir.part): the prefix its parameters carry in the full model's
    # state_dict, so the full model's weights can be given as they are.
    weight_prefix: str = ""

    def parameters(self, buffers: bool = False) -> list[tuple[str, ParamSpec]]:
        """(state_dict key, spec) for every parameter, in module order."""
        return [
            (f"{n.name}.{k}", p)
            for n in self.nodes
            for k, p in n.params.items()
            if buffers or not p.buffer
        ]

    def token_inputs(self) -> dict[str, int]:
        """Integer model inputs read by an embedding -> how many token ids each may hold."""
        inputs = {id(v): v.name for v in self.inputs}
        return {
            inputs[id(n.inputs[0])]: n.op.num_tokens(n)  # type: ignore[attr-defined]
            for n in self.nodes
            if hasattr(n.op, "num_tokens") and id(n.inputs[0]) in inputs
        }

    def ties(self) -> dict[str, str]:
        """Tied parameters: the sharer's state_dict key -> the owner's. PyTorch's state_dict
        holds both keys (one tensor); ONNX one initializer, the owner's; counts count it once."""
        return {f"{n.name}.{k}": owner for n in self.nodes for k, owner in n.tied().items()}

    def param_count(self) -> int:
        total = 0
        for _, p in self.parameters():
            count = 1
            for d in p.shape:
                count *= d
            total += count
        return total


def fmt_attr(v: Any) -> str:
    if isinstance(v, Sym):
        return str(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(fmt_attr(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def format_graph(g: Graph) -> str:
    """A compact, diff-friendly text form: one line per node, parameters indented below."""
    sig = ", ".join(f"{v.name}: {v.type}" for v in g.inputs)
    lines = [f"model {g.name}({sig}) {{  # {g.path}"]
    for n in g.nodes:
        outs = ", ".join(v.name for v in n.outputs)
        attrs = " ".join(
            f"{k}={fmt_attr(v)}" for k, v in n.attrs.items() if v not in (None, "default")
        )
        types = ", ".join(str(v.type) for v in n.outputs)
        ins = ", ".join(v.name for v in n.inputs)
        lines.append(f"  {outs} = {n.op.name}({ins}){' ' + attrs if attrs else ''} : {types}")
        lines.append(f"      # {n.name} @{n.span.line}:{n.span.column}")
        for k, p in n.params.items():
            kind = "buffer" if p.buffer else "param"
            init = p.init.kind + (f"({p.init.value})" if p.init.kind == "constant" else "")
            init += fmt_attr(p.init.values) if p.init.values is not None else ""
            frozen = " frozen" if not p.trainable else ""
            lines.append(f"      {kind} {k}: {p.dtype}{list(p.shape)} init={init}{frozen}")
    outs = ", ".join(f"{k} = {v.name}" if k != v.name else k for k, v in g.outputs.items())
    lines.append(f"  return {outs}")
    lines.append(f"}}  # {g.param_count():,} parameters")
    if g.training:
        lines += _format_training(g.training)
    return "\n".join(lines) + "\n"


def _format_training(t: Training) -> list[str]:
    lines = ["train {"]
    lines += [f"  target {v.name}: {v.type}" for v in t.targets]
    for term in [*t.loss, *t.penalties]:
        attrs = ", ".join(
            [*(v.name for v in term.inputs), *(f"{k}={fmt_attr(v)}" for k, v in term.attrs.items())]
        )
        lines.append(f"  loss += {term.weight!r} * {term.op.name}({attrs})")
    for key, setting in (("optimizer", t.optimizer), ("schedule", t.schedule)):
        if setting:
            kw = ", ".join(f"{k}={fmt_attr(v)}" for k, v in setting[1].items())
            lines.append(f"  {key} = {setting[0].name}({kw})")
    # An unset setting (None: grad_clip, early_stopping) is left out, as in the spec.
    lines += [f"  {k} = {fmt_attr(v)}" for k, v in t.settings.items() if v is not None]
    lines.append("}")
    return lines


def verify(g: Graph) -> None:
    """Re-derive every node's output types and parameters from the registry and check the graph
    is well-formed (topological, unique names). Raises AssertionError on an internal bug."""
    defined = {id(v) for v in g.inputs}
    names = {v.name for v in g.inputs}
    for n in g.nodes:
        for v in n.inputs:
            assert id(v) in defined, f"{n.name}: input {v.name} used before it is defined"
        inferred = n.op.infer([v.type for v in n.inputs], n.attrs)
        inferred = inferred if isinstance(inferred, list) else [inferred]
        assert inferred == [v.type for v in n.outputs], f"{n.name}: types disagree: {inferred}"
        assert n.op.params([v.type for v in n.inputs], n.attrs).keys() == n.params.keys()
        for v in n.outputs:
            assert v.name not in names, f"value name {v.name} defined twice"
            names.add(v.name)
            defined.add(id(v))
    for v in g.outputs.values():
        assert id(v) in defined, f"output {v.name} is not computed by the graph"
    owners = dict(g.parameters())
    for sharer, owner in g.ties().items():
        assert owner in owners, f"{sharer} is tied to {owner}, which is no parameter"


def part(g: Graph, instance: str) -> Graph:
    """The nodes of one block instance (`decoder1`) as a model of its own: its inputs are the
    values it reads from outside, its outputs the values it gives to the rest of the graph (or
    as model outputs). Names lose the instance's prefix, so its parameters are `fc1.weight`
    where the full model's are `decoder1.fc1.weight`. No training section."""
    prefix = instance + "."
    nodes = [n for n in g.nodes if n.name.startswith(prefix)]
    if not nodes:
        instances = sorted({n.name.split(".")[0] for n in g.nodes if "." in n.name})
        raise SpecError(
            f"model {g.name} has no block instance '{instance}'",
            f"block instances: {', '.join(instances)}" if instances else "it calls no blocks",
        )
    for n in nodes:
        for key, owner in n.tied().items():
            if not owner.startswith(prefix):
                raise SpecError(
                    f"{n.name}.{key} is tied to {owner}, outside block instance '{instance}'",
                    "a part holds only its own parameters; untie them to export it alone",
                )
    inside = {id(v) for n in nodes for v in n.outputs}
    taken = {v.name[len(prefix) :] for n in nodes for v in n.outputs}
    copies: dict[int, Value] = {}

    def copy(v: Value) -> Value:
        if id(v) not in copies:
            name = v.name[len(prefix) :] if id(v) in inside else v.name
            while id(v) not in inside and name in taken:  # an input named like an inner value
                name += "_in"
            taken.add(name)
            copies[id(v)] = Value(name, v.type, v.user_named)
        return copies[id(v)]

    inputs = [copy(v) for n in nodes for v in n.inputs if id(v) not in inside]
    used_outside = [v for n in g.nodes if n not in nodes for v in n.inputs]
    outputs = [v for v in [*used_outside, *g.outputs.values()] if id(v) in inside]
    new_nodes = [
        Node(
            n.op,
            n.name[len(prefix) :],
            [copy(v) for v in n.inputs],
            {k: v[len(prefix) :] if k in n.op.ties and v else v for k, v in n.attrs.items()},
            [copy(v) for v in n.outputs],
            n.span,
            n.params,
        )
        for n in nodes
    ]
    return Graph(
        f"{g.name}_{instance}",
        g.path,
        list({id(v): v for v in inputs}.values()),
        {copy(v).name: copy(v) for v in outputs},
        new_nodes,
        weight_prefix=prefix,
    )
