"""The IR's consistency check: every type re-derived from the registry's shape rules."""

from __future__ import annotations

from dslc.ir.graph import Graph
from dslc.ir.types import name_data_dims


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
        inferred = [name_data_dims(t, n.name) for t in inferred]
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
