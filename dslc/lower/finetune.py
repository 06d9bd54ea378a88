"""Fine-tuning settings of a train section: where the weights start from, which layers are
frozen (and until when), and the optimizer's parameter groups.

    init_from = "runs/pretrain/best.safetensors"     # relative to the spec's folder
    allow_missing = ["fc.*"]                          # keys that keep their fresh init
    freeze = ["conv1", "bn1", "layer*"]               # trained from epoch `unfreeze_at` on
    unfreeze_at = 5
    param_groups = [group("layer*", lr=1e-3), group("fc", weight_decay=0.0)]
    decay_norms_and_biases = false                    # no weight decay on 1-D parameters

A pattern is a glob on state_dict keys; one that names a module (`layer1`, `layer1.0`) stands
for every key under it. Each must match a parameter or buffer of the model: one that matches
nothing is an error at its position. The settings go into `Training.settings` only when
given, so specs without them compile as before."""

from __future__ import annotations

from typing import Any

from dslc.diagnostics import SpecError
from dslc.frontend import ast
from dslc.ir.graph import Graph
from dslc.ir.groups import Group, matches
from dslc.lower.scope import Frame
from dslc.ops.base import Attr, suggest

# name -> (what it is, for the docs and messages); the plain-valued ones are Attrs.
SETTINGS: dict[str, Attr] = {
    a.name: a
    for a in (
        Attr("init_from", "str", None, "start from these weights (safetensors or a state_dict)"),
        Attr("allow_missing", "str", None, "patterns of keys the weights may lack or mis-shape"),
        Attr("freeze", "str", None, "patterns of the parameters that do not train"),
        Attr("unfreeze_at", "int", None, "the epoch from which frozen layers train", positive=True),
        Attr("param_groups", "str", None, "group(PATTERN, ..., lr=, weight_decay=) calls"),
        Attr(
            "decay_norms_and_biases",
            "bool",
            True,
            "false: no weight decay on parameters of one dim (biases, norm scales)",
        ),
    )
}
PATTERN_SETTINGS = ("allow_missing", "freeze")
GROUP_OPTIONS = ("lr", "weight_decay")


def setting(el: Any, stmt: ast.Assign, graph: Graph, model_scope: Any, settings: dict) -> None:
    """Lower `key = value` for one of SETTINGS into `settings`."""
    key = stmt.names[0]
    if key == "param_groups":
        settings[key] = tuple(_group(el, e, graph) for e in _items(stmt.value))
    elif key in PATTERN_SETTINGS:
        settings[key] = tuple(_pattern(e, graph, key) for e in _items(stmt.value))
    else:
        settings[key] = SETTINGS[key].coerce(None, el.eval(stmt.value, model_scope, Frame()))


def check(settings: dict, spans: dict[str, Any]) -> None:
    """Checks between the settings; raises SpecError at the offending line."""
    if settings.get("unfreeze_at") is not None:
        if not settings.get("freeze"):
            raise SpecError(
                "unfreeze_at needs frozen layers",
                'add `freeze = ["conv1", ...]`',
                spans["unfreeze_at"],
            )
        if settings["unfreeze_at"] > settings["epochs"]:
            raise SpecError(
                f"unfreeze_at = {settings['unfreeze_at']} is after the last epoch "
                f"({settings['epochs']})",
                "epochs count from 1; unfreeze_at = E trains the frozen layers from epoch E on",
                spans["unfreeze_at"],
            )


def _items(e: ast.Expr) -> tuple[ast.Expr, ...]:
    return e.items if isinstance(e, ast.ListExpr) else (e,)


def _pattern(e: ast.Expr, graph: Graph, key: str) -> str:
    if not (isinstance(e, ast.Literal) and isinstance(e.value, str)):
        raise SpecError(
            f'{key} takes patterns: strings such as "fc.*" or a list of them', span=e.span
        )
    pattern = e.value.strip('"')
    keys = [k for k, _ in graph.parameters(buffers=True)]
    if not any(matches(k, pattern) for k in keys):
        modules = list(dict.fromkeys(k.split(".")[0] for k in keys))
        raise SpecError(
            f"{key}: pattern '{pattern}' matches no parameter of model {graph.name}",
            suggest(pattern, modules) or f"its modules: {', '.join(modules)}",
            e.span,
        )
    return pattern


def _group(el: Any, e: ast.Expr, graph: Graph) -> Group:
    if not (isinstance(e, ast.Call) and e.name == "group") or not e.args:
        raise SpecError(
            "param_groups is a list of group(PATTERN, ..., lr=..., weight_decay=...) calls",
            'such as `param_groups = [group("layer*", lr=1e-4)]`',
            e.span,
        )
    patterns = tuple(_pattern(a, graph, "group") for a in e.args)
    options = []
    for kw in e.kwargs:
        if kw.name not in GROUP_OPTIONS:
            hint = suggest(kw.name, list(GROUP_OPTIONS)) or "a group sets lr and weight_decay"
            raise SpecError(f"group has no option '{kw.name}'", hint, kw.span)
        attr = Attr(kw.name, "float", None, "", positive=kw.name == "lr", minimum=0.0)
        try:
            value = attr.coerce("group", el.eval(kw.value, el.globals, Frame()))
        except SpecError as err:
            raise SpecError(err.message, err.hint, kw.span) from None
        options.append((kw.name, value))
    return Group(patterns, tuple(options), e.span.line)
