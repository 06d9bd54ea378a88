"""create_optimizer for a spec with parameter groups (`param_groups = [group(...)]`) or with
`decay_norms_and_biases = false`: the loop over `model.named_parameters()` a person writes to
give the backbone a smaller learning rate or to keep weight decay off biases and norms."""

from __future__ import annotations

from dslc.ir.graph import Graph, Training
from dslc.ir.groups import Group, matches

# Settings that shape create_optimizer; the TRAINING table leaves them out.
OPTIMIZER_SETTINGS = ("param_groups", "decay_norms_and_biases")

MATCHES = '''def _matches(key, *patterns):
    """Whether a state_dict key matches a glob, or lies in a module a pattern names."""
    return any(fnmatchcase(key, p) or fnmatchcase(key, p + ".*") for p in patterns)'''


def grouped(t: Training) -> bool:
    return bool(t.settings.get("param_groups")) or not t.settings.get(
        "decay_norms_and_biases", True
    )


def imports(g: Graph) -> list[str]:
    return ["from fnmatch import fnmatchcase", ""] if g.training and grouped(g.training) else []


def create_optimizer(g: Graph, t: Training) -> list[str]:
    """`def create_optimizer(model)` building one list per group, then the optimizer."""
    assert t.optimizer is not None
    op, attrs, span = t.optimizer
    groups: list[Group] = list(t.settings.get("param_groups", ()))
    keys = [k for k, p in g.parameters()]
    if any(not any(matches(k, p) for grp in groups for p in grp.patterns) for k in keys):
        groups.append(Group((), (), 0))  # the parameters no pattern names
    split = not t.settings.get("decay_norms_and_biases", True)
    names = [_name(i, grp, len(groups)) for i, grp in enumerate(groups)]
    if split:
        body = [f"    {name}, {name}_no_decay = [], []" for name in names]
    else:
        body = [f"    {', '.join(names)} = {', '.join('[]' for _ in names)}"]
    body.append("    for name, p in model.named_parameters():")
    if split:
        body.append("        one_dim = p.ndim <= 1  # biases and norm scales: no weight decay")
    for i, (grp, name) in enumerate(zip(groups, names, strict=True)):
        add = (
            f"({name}_no_decay if one_dim else {name}).append(p)" if split else f"{name}.append(p)"
        )
        if len(groups) == 1:
            body.append(f"        {add}")
            continue
        test = ", ".join(f'"{p}"' for p in grp.patterns)
        body.append(
            f"        {'if' if i == 0 else 'elif'} _matches(name, {test}):"
            if test
            else "        else:"
        )
        body.append(f"            {add}")
    return (
        ["", "", *MATCHES.split("\n"), "", "", "def create_optimizer(model):"]
        + _doc(groups, span.line)
        + body
        + _factory(op.torch_factory(attrs, "GROUPS"), groups, names, split)
    )


def _entries(groups: list[Group], names: list[str], split: bool) -> list[str]:
    entries = []
    for grp, name in zip(groups, names, strict=True):
        options = "".join(f', "{k}": {v!r}' for k, v in grp.options)
        entries.append(f'{{"params": {name}{options}}}')
        if split:
            lr = "".join(f', "{k}": {v!r}' for k, v in grp.options if k == "lr")
            entries.append(f'{{"params": {name}_no_decay{lr}, "weight_decay": 0.0}}')
    return entries


def _factory(factory: str, groups: list[Group], names: list[str], split: bool) -> list[str]:
    """`torch.optim.X(GROUPS, lr=...)` with the list of groups written out, one a line."""
    head, _, tail = factory.partition("GROUPS")
    entries = _entries(groups, names, split)
    rest = tail.removeprefix(", ").removesuffix(")")
    return [
        f"    return {head}",
        "        [",
        *(f"            {e}," for e in entries),
        "        ],",
        *([f"        {rest},"] if rest else []),
        "    )",
    ]


def _doc(groups: list[Group], line: int) -> list[str]:
    lines = sorted({grp.line for grp in groups if grp.line})
    if not lines:
        return [
            f'    """The spec\'s optimizer (line {line}); parameters of one dim (biases, norm '
            'scales) take no weight decay."""'
        ]
    return [
        f'    """The spec\'s optimizer (line {line}) over the parameter groups of line {lines[0]}: '
        "a parameter",
        "    joins the first group whose patterns match its state_dict key (a module's name covers",
        '    the keys under it), or the last."""',
    ]


def _name(i: int, grp: Group, count: int) -> str:
    if not grp.patterns:
        return "rest"
    return "params" if count == 1 else f"group{i + 1}"
