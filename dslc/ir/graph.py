"""The typed IR: a graph of nodes in topological order. Each node applies one registry op to
input Values, with resolved attributes, and produces typed output Values; it carries its
source span and the parameters it owns. `format_graph` is the text form the golden tests diff;
`verify` re-derives every type from the registry's shape rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dslc.diagnostics import Span
from dslc.ir.types import INT_DTYPES, TensorType

if TYPE_CHECKING:
    from dslc.ops.base import OpDef
    from dslc.ops.init import Init
    from dslc.ops.optim import Optimizer
    from dslc.ops.schedule import Schedule


@dataclass(frozen=True)
class ParamSpec:
    """A learned parameter (or a buffer, such as batch norm's running mean) of one node."""

    shape: tuple[int, ...]
    init: Init
    buffer: bool = False
    dtype: str = "f32"
    trainable: bool = True  # False: a frozen parameter (given in the spec, never updated)


@dataclass(eq=False)
class Value:
    name: str  # unique in its graph; also the ONNX value name
    type: TensorType
    user_named: bool = False  # named by the spec (an input, target or assignment)
    hint: str = ""  # the spec name of the statement that made it (generated code names it so)

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
    # attribute -> (Python source of the call site's argument, the value given), for the
    # attributes the spec gave (lower.codes): generated block classes may write the source.
    codes: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def output(self) -> Value:
        return self.outputs[0]

    def key(self, param: str) -> str:
        """A parameter's state_dict key: `conv1.weight`; a free-standing learned tensor (key
        "") is its node's name alone, as an nn.Parameter attribute is."""
        return f"{self.name}.{param}" if param else self.name

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
    schedule: tuple[Schedule, dict[str, Any], Span] | None = None
    penalties: list[LossTerm] = field(default_factory=list)  # terms on the weights, no inputs
    # image pipelines (dslc.transforms): "preprocess" and "augment" -> steps; data, not model
    transforms: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def metrics(self) -> dict[str, tuple[Value, Value]]:
        """Accuracy (argmax over dim 1 == target) of each classification term with class-index
        targets: accuracy, accuracy_2, ... -> (prediction, target)."""
        pairs = [
            (term.inputs[0], term.inputs[1])
            for term in self.loss
            if term.op.classifies and term.inputs[1].type.dtype in INT_DTYPES
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
    root: Any = None  # the model's ir.structure.Instance: the block structure, for PyTorch
    # Outputs declared `train output`: the loss reads them; the PyTorch module returns them
    # after the others, and the ONNX graph (for inference) leaves them out.
    train_outputs: tuple[str, ...] = ()

    @property
    def served(self) -> dict[str, Value]:
        """The outputs of the model for inference: all but the training outputs."""
        return {k: v for k, v in self.outputs.items() if k not in self.train_outputs}

    def parameters(self, buffers: bool = False) -> list[tuple[str, ParamSpec]]:
        """(state_dict key, spec) for every parameter, in module order."""
        return [
            (n.key(k), p)
            for n in self.nodes
            for k, p in n.params.items()
            if buffers or not p.buffer
        ]

    def token_inputs(self) -> dict[str, int]:
        """Integer model inputs read by an embedding -> how many token ids each may hold."""
        inputs = {id(v): v.name for v in self.inputs}
        return {
            inputs[id(n.inputs[0])]: count
            for n in self.nodes
            if (count := n.op.num_tokens(n)) is not None and id(n.inputs[0]) in inputs
        }

    def ties(self) -> dict[str, str]:
        """Tied parameters: the sharer's state_dict key -> the owner's. PyTorch's state_dict
        holds both keys (one tensor); ONNX one initializer, the owner's; counts count it once."""
        return {n.key(k): owner for n in self.nodes for k, owner in n.tied().items()}

    def param_count(self) -> int:
        total = 0
        for _, p in self.parameters():
            count = 1
            for d in p.shape:
                count *= d
            total += count
        return total
