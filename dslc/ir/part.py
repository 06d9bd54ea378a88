"""One block instance of a model as a model of its own (`dslc compile --part`)."""

from __future__ import annotations

from dataclasses import replace

from dslc.diagnostics import SpecError
from dslc.ir import structure as st
from dslc.ir.graph import Graph, Node, Value


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
            copies[id(v)] = Value(name, v.type, v.user_named, v.hint)
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
            n.codes,
        )
        for n in nodes
    ]
    graph = Graph(
        f"{g.name}_{instance}",
        g.path,
        list({id(v): v for v in inputs}.values()),
        {copy(v).name: copy(v) for v in outputs},
        new_nodes,
        weight_prefix=prefix,
    )
    renamed = {id(old): new for old, new in zip(nodes, new_nodes, strict=True)}
    graph.root = _root(g, instance, graph, renamed, copy)
    return graph


def _root(
    g: Graph, instance: str, part: Graph, nodes: dict[int, Node], value
) -> st.Instance | None:
    """The part's block structure: the instance's, over the part's nodes and values."""
    found = next((i for i in g.root.instances() if i.path == instance), None) if g.root else None
    if found is None:
        return None
    root = _rebase(found, nodes, value, instance + ".")
    root.path = ""
    root.inputs, root.input_names = part.inputs, [v.name for v in part.inputs]
    root.outputs, root.output_names = list(part.outputs.values()), list(part.outputs)
    return root


def _rebase(inst: st.Instance, nodes: dict[int, Node], value, prefix: str) -> st.Instance:
    """A copy of an instance's structure over the part's own nodes and values."""

    def items(old: list[st.Item]) -> list[st.Item]:
        out: list[st.Item] = []
        for item in old:
            match item:
                case st.OpItem():
                    out.append(st.OpItem(nodes[id(item.node)], item.as_module))
                case st.CallItem():
                    out.append(st.CallItem(_rebase(item.instance, nodes, value, prefix), item.hint))
                case st.RepeatItem():
                    copies = [
                        st.Copy(items(c.items), value(c.input), c.output and value(c.output))
                        for c in item.copies
                    ]
                    out.append(replace(item, copies=copies))
                case st.SeqItem():
                    out.append(
                        replace(
                            item,
                            items=items(item.items),
                            input=value(item.input),
                            output=item.output and value(item.output),
                        )
                    )
                case st.CondItem():
                    out.append(replace(item, items=items(item.items), result=value(item.result)))
        return out

    return replace(
        inst,
        path=inst.path.removeprefix(prefix),
        inputs=[value(v) for v in inst.inputs],
        outputs=[value(v) for v in inst.outputs],
        items=items(inst.items),
    )
