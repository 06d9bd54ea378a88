"""Lowering of the train section: targets, the loss (a weighted sum of registry losses bound
to model outputs, targets and inputs, and of penalties), the optimizer, the learning-rate
schedule, and the plain settings."""

from __future__ import annotations

from typing import Any

from dslc.diagnostics import Diagnostics, SpecError
from dslc.frontend import ast
from dslc.ir.graph import Graph, LossTerm, Training, Value
from dslc.ir.limits import check_weight
from dslc.lower import finetune
from dslc.lower.binding import Arg, bind
from dslc.lower.elaborate import Elaborator
from dslc.lower.scope import POISON, Frame, Poisoned, Scope
from dslc.lower.transforms import lower_pipeline
from dslc.ops.base import REGISTRY, Attr, OpDef, describe, suggest
from dslc.transforms import PIPELINES

# Plain settings of a train section: name -> its attribute (type, default, doc).
SETTINGS: dict[str, Attr] = {
    a.name: a
    for a in (
        Attr("batch_size", "int", 32, "examples per optimizer step", positive=True),
        Attr("epochs", "int", 10, "passes over the training data", positive=True),
        Attr(
            "grad_clip",
            "float",
            None,
            "clip the gradients' total L2 norm to this before each optimizer step",
            positive=True,
        ),
        Attr(
            "early_stopping",
            "int",
            None,
            "stop after this many epochs without improvement of `monitor`",
            positive=True,
        ),
        Attr(
            "monitor",
            "str",
            "val_loss",
            "what early stopping and the best checkpoint watch: the validation loss (lower is "
            "better) or accuracy (higher is better)",
            choices=("val_loss", "val_accuracy"),
        ),
    )
}
# Settings for text data, in specs whose model reads token ids (an integer input read by an
# embedding): `dslc train --data corpus.txt` cuts the text into windows of `context` tokens.
TEXT_SETTINGS: dict[str, Attr] = {
    a.name: a
    for a in (
        Attr(
            "context",
            "int",
            None,
            "tokens per training window of text data; default: the token input's length T when "
            "it is a number",
            positive=True,
        ),
        Attr(
            "tokenizer",
            "str",
            "bytes",
            "how text becomes tokens: bytes (256 ids) or bpe (byte-pair encoding trained on the "
            "data, with as many tokens as the embedding has rows)",
            choices=("bytes", "bpe"),
        ),
    )
}
SPECIAL = ("loss", "optimizer", "schedule")
EXAMPLES = {
    "loss": "loss = cross_entropy(logits, y)",
    "optimizer": "optimizer = adam(lr=1e-3)",
    "schedule": "schedule = cosine(warmup=5)",
}


def lower_training(
    el: Elaborator, program: ast.Program, graph: Graph, model_scope: Scope, diags: Diagnostics
) -> None:
    """Target types see the model's parameters, constants and symbolic dims (N is the inputs' N)."""
    if not program.trains:
        return
    for extra in program.trains[1:]:
        diags.error(extra.span, "a spec has at most one train section")
    train = program.trains[0]
    scope = Scope()
    t = Training([], [], None, {k: a.default for k, a in SETTINGS.items()})
    seen: dict[str, ast.Stmt] = {}
    for stmt in train.body:
        try:
            _statement(el, stmt, graph, scope, model_scope, t, seen)
        except SpecError as err:
            el.report(err, stmt.span)
            if isinstance(stmt, ast.TargetDecl):  # a later loss using it stays quiet
                scope.vars.setdefault(stmt.name, POISON)
        except Poisoned:
            pass
    for key in ("loss", "optimizer"):
        if key not in seen and not diags.has_errors:
            article = "a" if key == "loss" else "an"
            diags.error(
                train.span, f"the train section needs {article} {key}", f"add `{EXAMPLES[key]}`"
            )
    if not diags.has_errors:
        _cross_checks(t, seen, diags)
    if graph.token_inputs():
        t.settings |= {k: a.default for k, a in TEXT_SETTINGS.items() if k not in t.settings}
    graph.training = t


def _cross_checks(t: Training, seen: dict[str, ast.Stmt], diags: Diagnostics) -> None:
    """Checks between settings, once each is known to be valid on its own."""
    if t.settings["monitor"] == "val_accuracy" and not t.metrics():
        diags.error(
            seen["monitor"].span,
            'monitor = "val_accuracy" needs an accuracy, but the loss has no classification term',
            "accuracy comes from cross_entropy or nll with class-index (integer) targets; "
            'monitor "val_loss" instead',
        )
    try:
        finetune.check(t.settings, {k: s.span for k, s in seen.items()})
    except SpecError as err:
        diags.error(err.span, err.message, err.hint)
    if t.schedule and t.optimizer:
        op, attrs, span = t.schedule
        try:
            op.check(attrs, t.settings["epochs"], t.optimizer[1]["lr"])
        except SpecError as err:
            diags.error(span, err.message, err.hint)


def _statement(
    el: Elaborator,
    stmt: ast.Stmt,
    graph: Graph,
    scope: Scope,
    model_scope: Scope,
    t: Training,
    seen: dict[str, ast.Stmt],
) -> None:
    match stmt:
        case ast.TargetDecl():
            if stmt.name in graph.outputs or any(v.name == stmt.name for v in graph.inputs):
                raise SpecError(
                    f"target '{stmt.name}' has the name of a model input or output", span=stmt.span
                )
            dims_scope = Scope(model_scope)  # new symbols in a target stay out of the model's scope
            value = Value(
                el.fresh(stmt.name), el.tensor_type(stmt.type, dims_scope), user_named=True
            )
            scope.define(stmt.name, value, stmt.span)
            t.targets.append(value)
        case ast.Assign() if len(stmt.names) == 1:
            key = stmt.names[0]
            if key in seen:
                raise SpecError(f"'{key}' is set twice in the train section", span=stmt.span)
            seen[key] = stmt
            if key == "loss":
                _set_loss(t, _loss(el, stmt.value, graph, scope, 1.0), graph, stmt)
            elif key == "optimizer":
                t.optimizer = _call_setting(el, stmt.value, "optimizer")  # type: ignore[assignment]
            elif key == "schedule":
                t.schedule = _call_setting(el, stmt.value, "schedule")
            elif key in finetune.SETTINGS:
                finetune.setting(el, stmt, graph, model_scope, t.settings)
            elif key in PIPELINES:
                t.transforms[key] = lower_pipeline(el, key, stmt.value, model_scope)
            elif key in SETTINGS or key in TEXT_SETTINGS:
                if key in TEXT_SETTINGS and not graph.token_inputs():
                    raise SpecError(
                        f"'{key}' is a setting for text data, but model {graph.name} reads no "
                        "token ids",
                        "text models take an integer input read by an embedding: "
                        "`input tokens: i64[N, T]`, `tokens -> embedding(256, 64)`",
                        stmt.span,
                    )
                # The model's scope: a setting may use its parameters (`context = context`).
                value = el.eval(stmt.value, model_scope, Frame())
                t.settings[key] = (SETTINGS | TEXT_SETTINGS)[key].coerce(None, value)
            else:
                names = [*SPECIAL, *SETTINGS, *TEXT_SETTINGS, *finetune.SETTINGS, *PIPELINES]
                hint = suggest(key, names) or f"settings: {', '.join(names)}"
                raise SpecError(f"unknown train setting '{key}'", hint, stmt.span)
        case _:
            raise SpecError(
                "the train section holds `target` declarations and `setting = value` lines",
                span=stmt.span,
            )


def _loss(el: Elaborator, e: ast.Expr, graph: Graph, scope: Scope, weight: float) -> list[LossTerm]:
    """A loss expression is a weighted sum of loss calls: `mse(a, x) + 0.1 * kl(...)`."""
    match e:
        case ast.Call():
            return [_loss_term(el, e, graph, scope, weight)]
        case ast.BinOp(op="+" | "-"):
            sign = 1.0 if e.op == "+" else -1.0
            return _loss(el, e.left, graph, scope, weight) + _loss(
                el, e.right, graph, scope, weight * sign
            )
        case ast.BinOp(op="*" | "/"):
            number, term = (
                (e.left, e.right)
                if e.op == "*" and not isinstance(e.left, ast.Call)
                else (e.right, e.left)
            )
            if isinstance(number, ast.Call | ast.BinOp):
                raise SpecError("a loss can be scaled by a number only", span=e.span)
            k = el.eval(number, el.globals, Frame())
            if isinstance(k, bool) or not isinstance(k, int | float) or (e.op == "/" and k == 0):
                raise SpecError(
                    f"a loss can be scaled by a number only, not {describe(k)}", span=number.span
                )
            scaled = check_weight(weight * (k if e.op == "*" else 1.0 / k), number.span)
            return _loss(el, term, graph, scope, scaled)
    raise SpecError(
        "a loss is a loss call such as cross_entropy(logits, y), or a weighted sum of them",
        span=e.span,
    )


def _set_loss(t: Training, terms: list[LossTerm], graph: Graph, stmt: ast.Stmt) -> None:
    t.loss = [term for term in terms if term.op.family == "loss"]
    t.penalties = [term for term in terms if term.op.family == "penalty"]
    if not t.loss:
        raise SpecError(
            "the loss needs a loss term besides its penalties",
            f"such as `{EXAMPLES['loss']} + 1e-4 * l2()`",
            stmt.span,
        )
    if t.penalties and not any(len(p.shape) > 1 for _, p in graph.parameters()):
        raise SpecError(
            f"{t.penalties[0].op.name}: model {graph.name} has no weights with more than one dim "
            "to penalize",
            span=t.penalties[0].span,
        )


def _loss_term(
    el: Elaborator, call: ast.Call, graph: Graph, scope: Scope, weight: float
) -> LossTerm:
    op = REGISTRY.get(call.name)
    if op is None or op.family not in ("loss", "penalty"):
        losses = [k for k, o in REGISTRY.items() if o.family in ("loss", "penalty")]
        raise SpecError(
            f"unknown loss '{call.name}'",
            suggest(call.name, losses) or f"losses: {', '.join(losses)}",
            call.name_span,
        )
    if op.family == "penalty" and call.args:
        raise SpecError(
            f"{op.name}() takes no tensors: it penalizes the model's weights",
            "for the squared error of a prediction, use mse(prediction, target)",
            call.args[0].span,
        )
    names = {v.name: v for v in graph.inputs} | graph.outputs | scope.vars
    args = [_loss_arg(op, call, i, a, graph, names) for i, a in enumerate(call.args)]
    kwargs = {kw.name: Arg(el.eval(kw.value, el.globals, Frame()), kw.span) for kw in call.kwargs}
    tensors, attrs = bind(op, args, kwargs, call.span)
    try:
        op.infer([v.type for v in tensors], attrs)
    except SpecError as err:
        raise SpecError(err.message, err.hint, call.span) from None
    return LossTerm(op, tensors, attrs, weight, call.span)


def _loss_arg(op: OpDef, call: ast.Call, i: int, a: ast.Expr, graph: Graph, names: dict) -> Arg:
    """A loss argument names a model output, a target or a model input."""
    if not isinstance(a, ast.Ref):
        raise SpecError(
            "loss arguments are model outputs, targets and model inputs, by name", span=a.span
        )
    value = names.get(a.name)
    if value is POISON:
        raise Poisoned()
    if value is None:
        raise SpecError(
            f"the loss refers to '{a.name}', which is not an output or an input of model "
            f"{graph.name}, or a target",
            suggest(a.name, list(names)) or f"outputs: {', '.join(graph.outputs)}",
            a.span,
        )
    if i in op.outputs_only and a.name not in graph.outputs:
        ordinal = ("first", "second", "third")[min(i, 2)]
        what = "the prediction" if i == 0 and op.name != "gaussian_kl" else op.inputs[i]
        kind = "a model input" if any(v is value for v in graph.inputs) else "a target"
        raise SpecError(
            f"the {ordinal} argument of {call.name} is {what}, a model output; "
            f"'{a.name}' is {kind}",
            f"outputs: {', '.join(graph.outputs)}",
            a.span,
        )
    return Arg(value, a.span)


def _call_setting(el: Elaborator, e: ast.Expr, family: str) -> tuple[Any, dict, Any]:
    """`optimizer = adam(lr=1e-3)`, `schedule = cosine(warmup=5)`: a call of a registry op of
    the family, with compile-time arguments."""
    ops = [k for k, o in REGISTRY.items() if o.family == family]
    example = EXAMPLES[family].split(" = ")[1]
    if not isinstance(e, ast.Call):
        raise SpecError(
            f"{'an' if family[0] in 'aeiou' else 'a'} {family} is a call such as {example}",
            f"{family}s: {', '.join(ops)}",
            e.span,
        )
    op = REGISTRY.get(e.name)
    if op is None or op.family != family:
        raise SpecError(
            f"unknown {family} '{e.name}'",
            suggest(e.name, ops) or f"{family}s: {', '.join(ops)}",
            e.name_span,
        )
    args = el.args(e.args, el.globals, Frame())
    _, attrs = bind(op, args, el.kwargs(e.kwargs, el.globals, Frame()), e.span)
    try:
        attrs = op.resolve([], attrs)
    except SpecError as err:
        raise SpecError(err.message, err.hint, e.span) from None
    return op, attrs, e.span
