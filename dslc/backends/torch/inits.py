"""The initializers the spec asks for, grouped as torchvision writes them: where every module of
one type starts its parameter the same way, one clause of a loop over self.modules(); per-layer
statements only for the layers that differ from the rest of their type. Frozen parameters and
tied weights follow, so that a tied weight is the shared tensor after initialization."""

from __future__ import annotations

from dslc.ir.graph import Graph
from dslc.ops import init

Group = tuple[str, str]  # (module class, attribute)


def attribute_path(key: str) -> str:
    """`layer1.0.conv1.weight` -> `self.layer1[0].conv1.weight`."""
    parts = ["self"]
    for part in key.split("."):
        parts.append(f"[{part}]" if part.isdigit() else f".{part}")
    return "".join(parts)


def _statements(g: Graph) -> tuple[dict[Group, list[str | None]], dict[str, Group]]:
    """For each (module class, attribute): the init statement of each parameter of that kind
    (None: the module's own default), and each parameter's group."""
    groups: dict[Group, list[str | None]] = {}
    where: dict[str, Group] = {}
    for n in g.nodes:
        if not n.op.module:
            continue
        for key, p in n.params.items():
            if p.buffer:
                continue
            group = n.op.torch_param(n, key)
            if not group[0]:  # an nn.Parameter attribute: initialized by itself
                continue
            groups.setdefault(group, []).append(init.torch_statement(p.init, "m." + group[1]))
            where[n.key(key)] = group
    return groups, where


def weight_init(g: Graph) -> list[str]:
    """Lines at the end of the model's __init__ (8 spaces of indent)."""
    groups, where = _statements(g)
    shared: dict[Group, str] = {g: s[0] for g, s in groups.items() if s[0] and len(set(s)) == 1}
    lines: list[str] = []
    clauses = _clauses(shared)
    if clauses:
        lines += ["        for m in self.modules():", *clauses]
    rest = [
        (n.key(key), where.get(n.key(key)), p.init)
        for n in g.nodes
        for key, p in n.params.items()
        if not p.buffer and where.get(n.key(key)) not in shared
    ]
    loops, done = _subtrees(rest)
    lines += loops
    single = []
    for full, _, start in rest:
        stmt = init.torch_statement(start, attribute_path(full)) if full not in done else None
        if stmt:
            single.append(stmt)
    if any(".copy_(" in stmt for stmt in single):  # copying values into a parameter
        lines += ["        with torch.no_grad():", *(f"            {x}" for x in single)]
    else:
        lines += [f"        {x}" for x in single]
    frozen = [n.key(k) for n in g.nodes for k, p in n.params.items() if not p.trainable]
    if frozen:
        lines.append("        # frozen: given in the spec (trainable=false), never trained")
        lines += [f"        {attribute_path(k)}.requires_grad_(False)" for k in frozen]
    for sharer, owner in g.ties().items():
        lines.append(f"        {attribute_path(sharer)} = {attribute_path(owner)}  # tied")
    return lines


LOOP_AT_LEAST = 4  # statements a loop must replace (it takes three lines of its own)


def _subtrees(rest: list[tuple[str, Group | None, init.Init]]) -> tuple[list[str], set[str]]:
    """Loops over one block's modules, as torchvision's FPN initializes its own convolutions:
    for a module class that starts differently across the model, the largest subtrees (a
    block instance's path) in which every parameter of the class starts by a statement, the
    same for each attribute, and that hold at least LOOP_AT_LEAST of them. The loops' lines,
    and the keys they initialize."""
    stmts = {k: init.torch_statement(i, "m." + grp[1]) if grp else None for k, grp, i in rest}
    groups = {k: grp for k, grp, _ in rest if grp is not None}
    lines: list[str] = []
    done: set[str] = set()
    for key, (cls, _) in groups.items():
        parts = key.split(".")[:-2]  # the module paths above the parameter's own module
        for depth in range(1, len(parts) + 1) if key not in done else ():
            path = ".".join(parts[:depth])
            under = [k for k, g in groups.items() if g[0] == cls and k.startswith(path + ".")]
            by_group: dict[Group, set[str | None]] = {}
            for k in under:
                by_group.setdefault(groups[k], set()).add(stmts[k])
            if len(under) >= LOOP_AT_LEAST and all(
                len(v) == 1 and None not in v for v in by_group.values()
            ):
                lines.append(f"        for m in {attribute_path(path)}.modules():")
                lines += _clauses({g: next(iter(v)) for g, v in by_group.items()})  # type: ignore[misc]
                done |= set(under)
                break
    return lines, done


def _clauses(shared: dict[Group, str]) -> list[str]:
    by_class: dict[str, list[str]] = {}
    for (cls, attr), stmt in shared.items():
        guarded = stmt if attr == "weight" else f"if m.{attr} is not None:\n{stmt}"
        by_class.setdefault(cls, []).append(guarded)
    out: list[str] = []
    for i, (cls, stmts) in enumerate(by_class.items()):
        out.append(f"            {'if' if i == 0 else 'elif'} isinstance(m, {cls}):")
        for stmt in stmts:
            for k, part in enumerate(stmt.split("\n")):
                out.append("                " + "    " * k + part)
    return out
