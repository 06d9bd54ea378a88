"""The block structure of a model, kept beside the flat graph: every block instance with its
definition's name, its bound parameter values, its inputs and outputs, and what it holds in
the order it was built. The PyTorch backend writes one class per block definition from it; the
flat graph (graph.nodes) stays what the checks, the summary and ONNX read.

What an instance holds are items:
- OpItem: a node of the graph made directly in the instance;
- CallItem: a nested block instance;
- RepeatItem: `stage * n`, its copies (an nn.ModuleList, or one nn.Sequential of all copies'
  layers when a copy holds several);
- SeqItem: a named sequence `(a -> b) as name`, an nn.Sequential of its stages;
- CondItem: `a if c else b` whose value is a tensor: the branch the instance took.

Expressions that the generated code may use instead of a value (a block parameter `width`, a
call site's `width * 4`, a repeat count `blocks - 1`) are kept as Python source, in the names
of the definition they were written in (`codes`). A dim of the definition's input i read with
`shape(x)[d]` stands there as the name DIM_MARKER + "i_d", which the backend writes as the
constructor argument that carries the dim (`in_channels`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dslc.ir.graph import Node, Value

DIM_MARKER = "__dim_"


@dataclass(eq=False)
class OpItem:
    node: Node
    as_module: bool = False  # a functional op named by the spec: a module attribute (nn.ReLU)


@dataclass(eq=False)
class CallItem:
    instance: Instance
    hint: str = ""  # the spec name of the statement that calls it


@dataclass(eq=False)
class Copy:
    items: list[Item]
    input: Value
    output: Value | None = None


@dataclass(eq=False)
class RepeatItem:
    name: str  # the container's attribute
    count: int
    count_code: str | None
    copies: list[Copy] = field(default_factory=list)
    sequential: bool = False  # several layers a copy: one nn.Sequential of them all
    hint: str = ""  # the name of the statement it stands in


@dataclass(eq=False)
class SeqItem:
    name: str
    items: list[Item]
    input: Value
    output: Value | None = None
    hint: str = ""


@dataclass(eq=False)
class CondItem:
    site: tuple[int, int, int, int]
    code: str | None  # the condition, over the definition's parameters
    taken: bool
    items: list[Item]
    result: Value
    hint: str = ""  # the spec name of the statement it is in


Item = OpItem | CallItem | RepeatItem | SeqItem | CondItem


@dataclass(eq=False)
class Instance:
    """A block instance, or the model itself (path "")."""

    block: str  # the definition's name
    path: str  # "layer1.0": the prefix of its layers' names
    params: dict[str, Any]  # parameter name -> bound value
    param_codes: dict[str, str]  # the call site's expressions for the parameters it gives
    doc: str = ""  # the spec's comment above the definition
    inputs: list[Value] = field(default_factory=list)
    input_names: list[str] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)  # parameters with constant defaults
    param_types: dict[str, str] = field(default_factory=dict)

    def queried_dims(self) -> set[tuple[int, int]]:
        """The (input, dim) pairs that its definition reads with `shape(x)[d]`."""
        texts: list[str] = []
        for item in walk(self.items):
            if isinstance(item, OpItem):
                texts += [c for c, _ in item.node.codes.values() if c]
            elif isinstance(item, CallItem):
                texts += item.instance.param_codes.values()
            elif isinstance(item, CondItem | RepeatItem):
                texts.append((item.code if isinstance(item, CondItem) else item.count_code) or "")
        found = re.findall(rf"\b{DIM_MARKER}(\d+)_(\d+)\b", " ".join(texts))
        return {(int(i), int(d)) for i, d in found}

    def instances(self):
        """This instance and every instance inside it, depth first, children first."""
        for item in walk(self.items):
            if isinstance(item, CallItem):
                yield from item.instance.instances()
        yield self


def walk(items: list[Item]):
    """Every item, descending into repetitions, sequences and conditions (not into calls)."""
    for item in items:
        yield item
        if isinstance(item, RepeatItem):
            for copy in item.copies:
                yield from walk(copy.items)
        elif isinstance(item, SeqItem | CondItem):
            yield from walk(item.items)
