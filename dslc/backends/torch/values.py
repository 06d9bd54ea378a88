"""Which Python expression gives a value in every instance of a block.

A class is written once for all instances of a block definition, so each number in it (a
constructor argument, a channel count) must be an expression that is right in every instance:
`in_channels`, `width * 4`, or a literal when every instance agrees. Each instance proposes the
expressions that are right for it, best first (`Cands`); the class takes the first one that
every instance proposes (`choose`)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

from dslc.backends.torch.pynames import python, variable
from dslc.ir.graph import Node, Value
from dslc.ir.structure import DIM_MARKER, Instance
from dslc.ops.pycode import Arg, norm, py

Cands = list[str]
MARKED = re.compile(rf"\b{DIM_MARKER}(\d+)_(\d+)\b")


class NotGeneric(Exception):
    """The instances of a block differ where one class cannot express the difference."""


def choose(cands: list[Cands], what: str) -> str:
    """The first expression of the first instance's list that every instance proposes."""
    for code in cands[0]:
        if all(code in c for c in cands[1:]):
            return code
    raise NotGeneric(what)


@dataclass
class Occ:
    """One occurrence of a definition's items: an instance (copies of a repetition in it share
    its tables). `vars`: the Python variable of each value; `dims`: each value's candidate
    expressions per dim; `uses`: the uses each value has left."""

    instance: Instance
    generic: bool
    dim_names: dict[tuple[int, int], str] = field(default_factory=dict)
    vars: dict[int, str] = field(default_factory=dict)
    dims: dict[int, list[Cands]] = field(default_factory=dict)
    uses: dict[int, int] = field(default_factory=dict)

    def source(self, code: str) -> str | None:
        """A spec expression as Python in this class: its names made legal, and each input dim
        it reads (`shape(x)[1]`, lower.codes.dim_marker) as the constructor argument that
        carries it (`in_channels`); None where a dim has none (the batch, a symbolic dim)."""
        text = python(code)
        if DIM_MARKER not in text:
            return text
        inputs = self.instance.inputs

        def name(m: re.Match) -> str:
            i, d = int(m[1]), int(m[2])
            if d == 0 or not isinstance(inputs[i].type.shape[d], int):
                raise LookupError(m[0])
            return self.dim_names.setdefault((i, d), dim_arg(self.instance, i, d))

        try:
            return MARKED.sub(name, text)
        except LookupError:
            return None

    def dim_cands(self, v: Value, d: int) -> Cands:
        found = self.dims.get(id(v))
        size = v.type.shape[d]
        base = found[d] if found and d < len(found) else []
        return [*base, py(size)] if isinstance(size, int) else base

    def arg_cands(self, node: Node, arg: Arg) -> Cands:
        """Expressions for one constructor argument of `node`."""
        out: Cands = []
        if self.generic and arg.attr is not None and arg.attr in node.codes:
            code, given = node.codes[arg.attr]
            if arg.item is not None:
                code, given = element(code, given, arg.item)
            text = self.source(code)
            if text is not None and norm(given) == norm(arg.value):
                out.append(text)
        if arg.dim is not None:
            k, d = arg.dim
            return [*out, *self.dim_cands(node.inputs[k], d)]
        return [*out, py(arg.value)]


def element(code: str, given: Any, i: int) -> tuple[str, Any]:
    """Element i of a list attribute's source and value (`[width, 1, 1]`, item 0: `width`); a
    single value given for a list attribute (`parameter(width)`) is its element 0."""
    tree = ast.parse(code, mode="eval").body
    if isinstance(tree, ast.List | ast.Tuple) and isinstance(given, list | tuple):
        return ast.unparse(tree.elts[i]), given[i]
    return code, given


def input_dims(occ: Occ, dim_names: dict[tuple[int, int], str]) -> None:
    """Candidates for the dims of a block instance's inputs: a parameter of equal value, then
    the constructor argument that names the dim (`in_channels`); that argument first where the
    definition reads the dim with `shape(x)[d]`."""
    inst = occ.instance
    occ.dim_names = dim_names
    queried = inst.queried_dims()
    for i, v in enumerate(inst.inputs):
        per_dim: list[Cands] = []
        for d, size in enumerate(v.type.shape):
            cands: Cands = []
            if occ.generic and isinstance(size, int) and d > 0:
                cands += [
                    variable(p)
                    for p, val in inst.params.items()
                    if isinstance(val, int) and not isinstance(val, bool) and val == size
                ]
                name = dim_names.setdefault((i, d), dim_arg(inst, i, d))
                # a dim the spec reads (`shape(x)[1]`) is its argument's wherever it stands
                cands.insert(0, name) if (i, d) in queried else cands.append(name)
            per_dim.append(cands)
        occ.dims[id(v)] = per_dim


def dim_arg(inst: Instance, i: int, d: int) -> str:
    """The constructor argument for dim d of input i: in_channels, in_features, ..."""
    rank = inst.inputs[i].type.rank
    what = "channels" if d == 1 and rank >= 3 else "features" if d == rank - 1 else f"dim{d}"
    name = f"in_{what}" if len(inst.inputs) == 1 else f"{inst.input_names[i]}_{what}"
    # a block parameter may have the name already (torchvision's blocks take in_channels)
    params, base, k = {variable(p) for p in inst.params}, name, 2
    while name in params:
        name, k = f"{base}{k}", k + 1
    return name


def output_dims(occ: Occ, node: Node) -> None:
    """Candidates for a node's output dims, from its inputs' and its attributes' expressions."""
    given = [(occ.source(code), value) for code, value in node.codes.values()]
    _dims(occ, node.inputs, node.outputs, given)
    if occ.generic:  # a dim an attribute sets: that attribute's expression first
        per_dim = occ.dims[id(node.outputs[0])]
        for d in node.op.made_dims(node):
            size = node.outputs[0].type.shape[d]
            first = [c for c, v in given if c is not None and v == size and not isinstance(v, bool)]
            per_dim[d] = [*first, *(c for c in per_dim[d] if c not in first)]
    origins = node.op.dim_origins(node)
    if occ.generic and origins is not None:  # a dim moved: its input's expressions first
        moved = occ.dims.get(id(node.inputs[0]), [])
        per_dim = occ.dims[id(node.outputs[0])]
        for d, src in enumerate(origins):
            per_dim[d] = [*(moved[src] if src < len(moved) else []), *per_dim[d]]


def call_dims(occ: Occ, inst: Instance) -> None:
    """Candidates for a nested instance's output dims, from its input dims and its call
    site's parameter expressions."""
    given = [(occ.source(code), inst.params.get(p)) for p, code in inst.param_codes.items()]
    _dims(occ, inst.inputs, inst.outputs, given)


def _dims(occ: Occ, inputs: list[Value], outputs: list[Value], given: list[tuple]) -> None:
    """Each output dim: an input's candidates at the same position where the size is the same,
    an expression given at the call site of equal value, or the sum of the inputs' dims there
    (a concatenation)."""
    if not occ.generic:
        return
    for out in outputs:
        per_dim: list[Cands] = []
        for d, size in enumerate(out.type.shape):
            cands: Cands = []
            if isinstance(size, int):
                for v in inputs:
                    if v.type.rank == out.type.rank and v.type.shape[d] == size:
                        cands += occ.dims.get(id(v), [[]] * v.type.rank)[d]
                cands += [
                    c
                    for c, value in given
                    if c is not None and value == size and not isinstance(value, bool)
                ]
                cands += _sum(occ, inputs, out, d, size)
            per_dim.append(cands)
        occ.dims[id(out)] = per_dim


def _sum(occ: Occ, inputs: list[Value], out: Value, d: int, size: int) -> Cands:
    same = [v for v in inputs if v.type.rank == out.type.rank]
    sizes = [n for v in same if isinstance(n := v.type.shape[d], int)]
    if len(same) < 2 or len(sizes) != len(same) or sum(sizes) != size:
        return []
    parts = [occ.dim_cands(v, d) for v in same]
    return [" + ".join(p[0] for p in parts)] if all(parts) else []
