"""The training half of the generated module: the loss as an nn.Module, create_loss,
create_optimizer, create_scheduler and penalty, and the contract tables (TARGETS, LOSS_INPUTS,
METRICS, TRAINING) that `dslc train` reads."""

from __future__ import annotations

from dslc.backends.torch import fmt, optim_groups
from dslc.backends.torch.pynames import variable
from dslc.ir.graph import Graph, Training, Value
from dslc.ir.types import DTYPES
from dslc.names import Namespace
from dslc.ops.loss import ignored


def factories(g: Graph) -> list[str]:
    """Loss, create_loss, create_optimizer, create_scheduler and penalty: what `dslc train`
    (or a hand-written loop) needs beyond the model."""
    t = g.training
    if t is None:
        return []
    out = _loss_class(t, _loss_params(g, t)) + ["", "", "def create_loss():", "    return Loss()"]
    if t.optimizer and optim_groups.grouped(t):
        out += optim_groups.create_optimizer(g, t)
    elif t.optimizer:
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
                params[id(v)] = (ns.create(variable(spec_names[id(v)])), spec_names[id(v)])
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
    line = f"return {' '.join(out)}"
    wrapped = fmt.wrap(line, len(indent))
    if all(len(x) <= fmt.WIDTH for x in wrapped) and len(wrapped) > 1 and "(" in wrapped[0]:
        return wrapped
    if len(indent) + len(line) <= fmt.WIDTH:
        return [indent + line]
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
    lr = t.optimizer[1]["lr"] if t.optimizer else 0.0  # lower_training requires an optimizer
    body = op.torch_factory(attrs, lr)
    when = "optimizer step" if op.steps == "step" else "epoch, on the metric"
    return head + [
        f'    """The spec\'s {op.name} schedule (line {span.line}); step it once per {when}."""',
        *(f"    {line}".rstrip() for line in body),
    ]


def _penalty(t: Training) -> list[str]:
    head = ["", "", "def penalty(model):"]
    if not t.penalties:
        return head + ['    """No penalty terms in the spec\'s loss."""', "    return None"]
    terms = [(term.op.torch_penalty(term, "model"), term.weight) for term in t.penalties]
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


def needs_math(g: Graph) -> bool:
    schedule = g.training.schedule if g.training else None
    return bool(schedule and schedule[0].needs_math)


def _literal(v) -> str:
    if isinstance(v, tuple):  # patterns of the fine-tuning settings
        return _tuple([_literal(x) for x in v])
    return f'"{v}"' if isinstance(v, str) else repr(v)


def _dim(d) -> str:
    return str(d) if isinstance(d, int) else f'"{d}"'


def tables(g: Graph) -> list[str]:
    """INPUTS, OUTPUTS, TOKENS, TARGETS, LOSS_INPUTS, METRICS, TRAINING: what a model takes
    and gives, and what dslc train feeds where."""
    lines = [
        *_signature("INPUTS", [(v.name, v) for v in g.inputs]),
        "# forward returns its outputs in this order (one tensor, or a tuple)",
        *_signature("OUTPUTS", list(g.outputs.items())),
    ]
    if g.train_outputs:
        lines += [
            "# the outputs only the loss reads (`train output`): not in the ONNX model",
            f"TRAIN_OUTPUTS = {_tuple([_literal(k) for k in g.train_outputs])}",
        ]
    tokens = g.token_inputs()
    if tokens:
        lines += [
            "# integer inputs read by an embedding: how many token ids each takes",
            "TOKENS = {" + ", ".join(f"{_literal(k)}: {n}" for k, n in tokens.items()) + "}",
        ]
    if g.training:
        t = g.training
        params = _loss_params(g, t)
        lines += [
            *_signature("TARGETS", [(v.name, v) for v in t.targets]),
            *fmt.wrap(f"LOSS_INPUTS = {_tuple([_literal(n) for _, n in params.values()])}", 0),
            *fmt.wrap(f"METRICS = {_metrics(t, params)}", 0, _metrics_comment(t)),
            *_ignored(t, params),
            *_schedule_steps(t),
            "TRAINING = {",
            *(
                f"    {_literal(k)}: {_literal(v)},"
                for k, v in sorted(t.settings.items())
                if k not in optim_groups.OPTIMIZER_SETTINGS
            ),
            "}",
        ]
    return lines


def _schedule_steps(t: Training) -> list[str]:
    """SCHEDULE_STEPS, for a schedule stepped once per epoch on the monitored metric
    (reduce-on-plateau); without it, create_scheduler's schedule steps once per optimizer step."""
    if t.schedule is None or t.schedule[0].steps == "step":
        return []
    return [
        "# step the schedule once per epoch: scheduler.step(monitored value)",
        'SCHEDULE_STEPS = "epoch"',
    ]


def _ignored(t: Training, params: dict[int, tuple[str, str]]) -> list[str]:
    """IGNORE_INDEX: the target value a classification term sets to count for nothing
    (padding), where the spec sets one; dslc train then allows it in the data and leaves it
    out of the accuracy."""
    table = {
        params[id(term.inputs[1])][1]: value
        for term in t.loss
        if (value := ignored(term)) is not None
    }
    if not table:
        return []
    text = ", ".join(f"{_literal(k)}: {v}" for k, v in table.items())
    return ["# target values that count for nothing (padding)", f"IGNORE_INDEX = {{{text}}}"]
