"""The IR's text form: one line per node, parameters indented below; the golden tests diff it."""

from __future__ import annotations

from typing import Any

from dslc.ir.graph import Graph, Node, Training
from dslc.ir.types import Sym


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


def non_default(n: Node) -> dict[str, Any]:
    """The node's required attributes, and the others where they differ from what its op makes
    of their defaults (a stride that resolved from the default 1 to (1, 1) is left out)."""
    required = {a.name for a in n.op.attrs if a.required}
    given = {a.name: n.attrs[a.name] if a.required else a.default for a in n.op.attrs}
    try:
        base = n.op.resolve([v.type for v in n.inputs], given)
    except Exception:  # noqa: BLE001 (defaults an op cannot resolve alone: print everything)
        base = {}
    return {
        k: v
        for k, v in n.attrs.items()
        if k in required or (v not in (None, "default") and (k not in base or base[k] != v))
    }


def format_graph(g: Graph) -> str:
    """A compact, diff-friendly text form: one line per node, parameters indented below."""
    sig = ", ".join(f"{v.name}: {v.type}" for v in g.inputs)
    lines = [f"model {g.name}({sig}) {{  # {g.path}"]
    for n in g.nodes:
        outs = ", ".join(v.name for v in n.outputs)
        attrs = " ".join(f"{k}={fmt_attr(v)}" for k, v in non_default(n).items())
        types = ", ".join(str(v.type) for v in n.outputs)
        ins = ", ".join(v.name for v in n.inputs)
        lines.append(f"  {outs} = {n.op.name}({ins}){' ' + attrs if attrs else ''} : {types}")
        where = "" if n.span.path == g.path else n.span.path + ":"  # an imported block's
        lines.append(f"      # {n.name} @{where}{n.span.line}:{n.span.column}")
        for k, p in n.params.items():
            kind = "buffer" if p.buffer else "param"
            init = str(p.init)
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
        defaults = {a.name: a.default for a in term.op.attrs}
        given = {k: v for k, v in term.attrs.items() if v != defaults.get(k)}
        attrs = ", ".join(
            [*(v.name for v in term.inputs), *(f"{k}={fmt_attr(v)}" for k, v in given.items())]
        )
        lines.append(f"  loss += {term.weight!r} * {term.op.name}({attrs})")
    for key, setting in (("optimizer", t.optimizer), ("schedule", t.schedule)):
        if setting:
            kw = ", ".join(f"{k}={fmt_attr(v)}" for k, v in setting[1].items())
            lines.append(f"  {key} = {setting[0].name}({kw})")
    # An unset setting (None: grad_clip, early_stopping) is left out, as in the spec.
    lines += [f"  {k} = {fmt_attr(v)}" for k, v in t.settings.items() if v is not None]
    lines += [f"  {k} = [{', '.join(s.text() for s in v)}]" for k, v in t.transforms.items()]
    lines.append("}")
    return lines
