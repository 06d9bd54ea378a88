"""PyTorch backend: IR -> readable, standalone Python source that imports only torch.

The module reads like hand-written PyTorch: one attribute per layer that holds parameters
(nested nn.Module containers for block instances, so state_dict keys equal the IR's names),
and a straight-line forward with a shape comment per line. Each op's code comes from its
registry entry (torch_module, torch_call)."""

from __future__ import annotations

import keyword
import re

from dslc import __version__
from dslc.ir.graph import Graph, Node, Training, Value
from dslc.ir.types import DTYPES
from dslc.ops import init

RESERVED = {"self", "torch", "nn", "F", "math"}


class Namespace:
    """Legal, unique Python names for values (after torch.fx's _Namespace)."""

    def __init__(self) -> None:
        self.taken: set[str] = set(RESERVED)

    def create(self, base: str) -> str:
        name = re.sub(r"\W", "_", base) or "v"
        if name[0].isdigit() or keyword.iskeyword(name):
            name = "v_" + name
        candidate, k = name, 1
        while candidate in self.taken:
            k += 1
            candidate = f"{name}_{k}"
        self.taken.add(candidate)
        return candidate


def aligned(lines: list[tuple[str, str]], indent: str) -> list[str]:
    """Code lines with their trailing comments lined up."""
    width = max((len(code) for code, _ in lines), default=0)
    return [
        f"{indent}{code:<{width}}  # {c}".rstrip() if c else f"{indent}{code}" for code, c in lines
    ]


def _inits(g: Graph) -> list[str]:
    out = []
    for n in g.nodes:
        for key, p in n.params.items():
            stmt = init.torch_statement(p.init, f"self.{n.name}.{key}")
            if stmt:
                out.append(stmt)
    return out


def _init_method(g: Graph) -> list[str]:
    lines: list[tuple[str, str]] = []
    containers: set[str] = set()
    for n in g.nodes:
        module = n.op.torch_module(n)
        if module is None:
            continue
        parts = n.name.split(".")
        for i in range(1, len(parts)):
            path = ".".join(parts[:i])
            if path not in containers:
                containers.add(path)
                lines.append((f"self.{path} = nn.Module()", "block instance"))
        lines.append((f"self.{n.name} = {module}", f"line {n.span.line}"))
        lines += [
            (f"self.{n.name}.{key} = self.{owner}", "tied: one tensor, counted once")
            for key, owner in n.tied().items()
        ]
    body = aligned(lines, " " * 8)
    inits = _inits(g)
    if inits:
        body += ["        self.reset_parameters()"]
    frozen = [
        f"self.{n.name}.{key}.requires_grad_(False)"
        for n in g.nodes
        for key, p in n.params.items()
        if not p.trainable
    ]
    if frozen:
        body += ["        # frozen: given in the spec (trainable=false), never trained"]
        body += [f"        {line}" for line in frozen]
    method = ["    def __init__(self):", "        super().__init__()", *body]
    if inits:
        method += [
            "",
            "    @torch.no_grad()",
            "    def reset_parameters(self):",
            '        """The initializers the spec asks for (init=, bias_init=)."""',
        ]
        method += [f"        {s}" for s in inits]
    return method


def _uses(g: Graph) -> dict[int, int]:
    uses: dict[int, int] = {}
    for n in g.nodes:
        for v in n.inputs:
            uses[id(v)] = uses.get(id(v), 0) + 1
    for v in g.outputs.values():
        uses[id(v)] = uses.get(id(v), 0) + 1000  # never overwrite an output's variable
    return uses


def _forward(g: Graph, ns: Namespace) -> list[str]:
    names: dict[int, str] = {id(v): ns.create(v.name) for v in g.inputs}
    names.update((id(v), ns.create(k)) for k, v in g.outputs.items() if id(v) not in names)
    uses = _uses(g)
    lines: list[tuple[str, str]] = [(f"# {v.name}: {v.type.shape_str()}", "") for v in g.inputs]
    for n in g.nodes:
        args = [names[id(v)] for v in n.inputs]
        names.update((id(v), _var(n, v, names, uses, ns)) for v in n.outputs)
        module = f"self.{n.name}" if n.op.torch_module(n) is not None else None
        target = ", ".join(names[id(v)] for v in n.outputs)
        shapes = ", ".join(v.type.shape_str() for v in n.outputs)
        lines.append((f"{target} = {n.op.torch_call(n, args, module)}", shapes))
    results = ", ".join(names[id(v)] for v in g.outputs.values())
    params = ", ".join(names[id(v)] for v in g.inputs)
    return [
        f"    def forward(self, {params}):",
        *aligned(lines, " " * 8),
        f"        return {results}",
    ]


def _var(n: Node, v: Value, names: dict[int, str], uses: dict[int, int], ns: Namespace) -> str:
    """Reuse the first input's variable along a chain (x = f(x)); name user-named values."""
    if id(v) in names:  # a model output, whose name was reserved up front
        return names[id(v)]
    if v.user_named:
        return ns.create(v.name.split(".")[-1] if "." in v.name else v.name)
    first = n.inputs[0] if n.inputs else None
    if len(n.outputs) == 1 and first is not None and uses.get(id(first), 0) == 1:
        return names[id(first)]
    return ns.create(n.name.replace(".", "_"))


def _training(g: Graph) -> list[str]:
    """Loss, create_loss, create_optimizer, create_scheduler and penalty: what `dslc train`
    (or a hand-written loop) needs beyond the model."""
    t = g.training
    if t is None:
        return []
    out = _loss_class(t, _loss_params(g, t)) + ["", "", "def create_loss():", "    return Loss()"]
    if t.optimizer:
        op, attrs, span = t.optimizer
        out += [
            "",
            "",
            "def create_optimizer(model):",
            f'    """The spec\'s optimizer (line {span.line})."""',
            f"    return {op.torch_factory(attrs, 'model.parameters()')}",
        ]
    return out + _scheduler(t) + _penalty(t)


def _loss_params(g: Graph, t: Training) -> dict[int, tuple[str, str]]:
    """Each value a loss term reads -> (its Python parameter name, its spec name: a key of
    INPUTS, OUTPUTS or TARGETS), in the order Loss.forward takes them."""
    spec_names = {id(v): v.name for v in g.inputs}
    spec_names |= {id(v): k for k, v in g.outputs.items()} | {id(v): v.name for v in t.targets}
    ns = Namespace()
    params: dict[int, tuple[str, str]] = {}
    for term in t.loss:
        for v in term.inputs:
            if id(v) not in params:
                params[id(v)] = (ns.create(spec_names[id(v)]), spec_names[id(v)])
    return params


def _loss_class(t: Training, params: dict[int, tuple[str, str]]) -> list[str]:
    calls = [
        (term.op.torch_call(term, [params[id(v)][0] for v in term.inputs], None), term.weight)
        for term in t.loss
    ]
    return [
        "",
        "",
        "class Loss(nn.Module):",
        f'    """The loss of line {t.loss[0].span.line}: outputs and targets in, a scalar out."""',
        "",
        f"    def forward(self, {', '.join(p for p, _ in params.values())}):",
        *_weighted_sum(calls, " " * 8),
    ]


def _weighted_sum(terms: list[tuple[str, float]], indent: str) -> list[str]:
    """`return a + 0.5 * b - c` from (code, weight) pairs; one term per line when long."""
    out = []
    for i, (code, w) in enumerate(terms):
        scaled = code if abs(w) == 1.0 else f"{abs(w)!r} * {code}"
        sign = "-" if w < 0 else "+"
        out.append(scaled if i == 0 and w > 0 else f"{sign} {scaled}" if i else f"-{scaled}")
    line = f"{indent}return {' '.join(out)}"
    if len(line) <= 100:
        return [line]
    return [f"{indent}return (", *(f"{indent}    {part}" for part in out), f"{indent})"]


def _scheduler(t: Training) -> list[str]:
    head = ["", "", 'def create_scheduler(optimizer, steps_per_epoch, epochs=TRAINING["epochs"]):']
    if t.schedule is None:
        return (
            head
            + ['    """No schedule in the spec: the learning rate stays constant."""']
            + ["    return None"]
        )
    op, attrs, span = t.schedule
    lr = t.optimizer[1]["lr"] if t.optimizer else None
    body = op.torch_factory(attrs, lr)  # type: ignore[attr-defined]
    return head + [
        f'    """The spec\'s {op.name} schedule (line {span.line}); step it once per optimizer '
        'step."""',
        *(f"    {line}".rstrip() for line in body),
    ]


def _penalty(t: Training) -> list[str]:
    head = ["", "", "def penalty(model):"]
    if not t.penalties:
        return head + ['    """No penalty terms in the spec\'s loss."""', "    return None"]
    terms = [
        (term.op.torch_penalty(term, "model"), term.weight)  # type: ignore[attr-defined]
        for term in t.penalties
    ]
    return head + [
        f'    """The loss\'s penalty terms (line {t.penalties[0].span.line}); the training loop '
        'adds them to Loss\'s value."""',
        *_weighted_sum(terms, " " * 4),
    ]


def _metrics(t: Training, params: dict[int, tuple[str, str]]) -> str:
    pairs = ", ".join(
        f'"{name}": ("{params[id(p)][1]}", "{params[id(y)][1]}")'
        for name, (p, y) in t.metrics().items()
    )
    return "{" + pairs + "}"


def _metrics_comment(t: Training) -> str:
    if not t.metrics():
        return "no classifier loss"
    last = any(term.attrs.get("class_dim") == -1 for term in t.loss)
    return f"accuracy: argmax over {'the last dim' if last else 'dim 1'} == target"


def _signature(name: str, values: list[tuple[str, Value]]) -> list[str]:
    """`NAME = {"x": ("float32", ("N", 64))}`, one entry per line when long."""
    items = [
        f'"{k}": ("{DTYPES[v.type.dtype][1]}", {_tuple([_dim(d) for d in v.type.shape])})'
        for k, v in values
    ]
    line = f"{name} = {{{', '.join(items)}}}"
    return [line] if len(line) <= 100 else [f"{name} = {{", *(f"    {i}," for i in items), "}"]


def _tuple(items: list[str]) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _needs_math(g: Graph) -> bool:
    schedule = g.training.schedule if g.training else None
    return bool(schedule and getattr(schedule[0], "needs_math", False))


def _literal(v) -> str:
    return f'"{v}"' if isinstance(v, str) else repr(v)


def _dim(d) -> str:
    return str(d) if isinstance(d, int) else f'"{d}"'


def emit(g: Graph) -> str:
    ns = Namespace()
    lines = [
        f'"""{g.name}, generated by dslc {__version__} from {g.path}. Do not edit: change the spec',
        "and compile again.",
        "",
        f"{g.param_count():,} parameters.",
        '"""',
        "",
        *(["import math", ""] if _needs_math(g) else []),
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
        *_signature("INPUTS", [(v.name, v) for v in g.inputs]),
        "# forward returns its outputs in this order (one tensor, or a tuple)",
        *_signature("OUTPUTS", list(g.outputs.items())),
    ]
    tokens = g.token_inputs()
    if tokens:
        lines += [
            "# integer inputs read by an embedding: how many token ids each takes",
            "TOKENS = {" + ", ".join(f'"{k}": {n}' for k, n in tokens.items()) + "}",
        ]
    if g.training:
        t = g.training
        params = _loss_params(g, t)
        lines += [
            *_signature("TARGETS", [(v.name, v) for v in t.targets]),
            f"LOSS_INPUTS = {_tuple([_literal(n) for _, n in params.values()])}",
            f"METRICS = {_metrics(t, params)}  # " + _metrics_comment(t),
            "TRAINING = {",
            *(f"    {_literal(k)}: {_literal(v)}," for k, v in sorted(t.settings.items())),
            "}",
        ]
    helpers = dict.fromkeys(h for n in g.nodes if (h := n.op.torch_helper(n)))
    for helper in helpers:
        lines += ["", "", *helper.strip("\n").split("\n")]
    lines += ["", "", f"class {g.name}(nn.Module):", *_init_method(g), "", *_forward(g, ns)]
    lines += [
        "",
        "",
        "def create_model():",
        f'    """A {g.name} with fresh parameters; call torch.manual_seed first to fix them."""',
        f"    return {g.name}()",
    ]
    lines += _training(g)
    return "\n".join(lines) + "\n"
