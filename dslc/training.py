"""Lowering of the train section: targets, the loss (a weighted sum of registry losses bound
to model outputs and targets), the optimizer, and the plain settings."""

from __future__ import annotations

from typing import Any

from dslc import ast
from dslc.binding import Arg, bind
from dslc.diagnostics import Diagnostics, SpecError
from dslc.elaborate import Elaborator
from dslc.ir import Graph, LossTerm, Training, Value
from dslc.ops.base import REGISTRY, Attr, describe, suggest
from dslc.scope import POISON, Frame, Poisoned, Scope

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
SPECIAL = ("loss", "optimizer")


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
    for key in SPECIAL:
        if key not in seen and not diags.has_errors:
            example = (
                "loss = cross_entropy(logits, y)" if key == "loss" else "optimizer = adam(lr=1e-3)"
            )
            article = "a" if key == "loss" else "an"
            diags.error(train.span, f"the train section needs {article} {key}", f"add `{example}`")
    _check_monitor(t, seen, diags)
    graph.training = t


def _check_monitor(t: Training, seen: dict[str, ast.Stmt], diags: Diagnostics) -> None:
    if t.settings["monitor"] == "val_accuracy" and not t.metrics() and not diags.has_errors:
        diags.error(
            seen["monitor"].span,
            'monitor = "val_accuracy" needs an accuracy, but the loss has no classification term',
            "accuracy comes from cross_entropy or nll with class-index (integer) targets; "
            'monitor "val_loss" instead',
        )


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
                t.loss = _loss(el, stmt.value, graph, scope, 1.0)
            elif key == "optimizer":
                t.optimizer = _optimizer(el, stmt.value)
            elif key in SETTINGS:
                value = el.eval(stmt.value, el.globals, Frame())
                t.settings[key] = SETTINGS[key].coerce(None, value)
            else:
                hint = (
                    suggest(key, [*SPECIAL, *SETTINGS])
                    or f"settings: {', '.join([*SPECIAL, *SETTINGS])}"
                )
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
            return _loss(el, term, graph, scope, weight * (k if e.op == "*" else 1.0 / k))
    raise SpecError(
        "a loss is a loss call such as cross_entropy(logits, y), or a weighted sum of them",
        span=e.span,
    )


def _loss_term(
    el: Elaborator, call: ast.Call, graph: Graph, scope: Scope, weight: float
) -> LossTerm:
    op = REGISTRY.get(call.name)
    if op is None or op.family != "loss":
        losses = [k for k, o in REGISTRY.items() if o.family == "loss"]
        raise SpecError(
            f"unknown loss '{call.name}'",
            suggest(call.name, losses) or f"losses: {', '.join(losses)}",
            call.name_span,
        )
    names = {**{k: v for k, v in graph.outputs.items()}, **scope.vars}
    args = []
    for i, a in enumerate(call.args):
        if isinstance(a, ast.Ref) and names.get(a.name) is POISON:
            raise Poisoned()
        if i == 0 and isinstance(a, ast.Ref) and a.name not in graph.outputs and a.name in names:
            raise SpecError(
                f"the first argument of {call.name} is the prediction, a model output; "
                f"'{a.name}' is a target",
                f"outputs: {', '.join(graph.outputs)}",
                a.span,
            )
        if isinstance(a, ast.Ref) and a.name in names:
            args.append(Arg(names[a.name], a.span))
        elif isinstance(a, ast.Ref):
            raise SpecError(
                f"the loss refers to '{a.name}', which is neither an output of model "
                f"{graph.name} nor a target",
                suggest(a.name, list(names)) or f"outputs: {', '.join(graph.outputs)}",
                a.span,
            )
        else:
            raise SpecError("loss arguments are model outputs and targets, by name", span=a.span)
    kwargs = {kw.name: Arg(el.eval(kw.value, el.globals, Frame()), kw.span) for kw in call.kwargs}
    tensors, attrs = bind(op, args, kwargs, call.span)
    try:
        op.infer([v.type for v in tensors], attrs)
    except SpecError as err:
        raise SpecError(err.message, err.hint, call.span) from None
    return LossTerm(op, tensors, attrs, weight, call.span)


def _optimizer(el: Elaborator, e: ast.Expr) -> tuple[Any, dict, Any]:
    optimizers = [k for k, o in REGISTRY.items() if o.family == "optimizer"]
    if not isinstance(e, ast.Call):
        raise SpecError(
            "an optimizer is a call such as adam(lr=1e-3)",
            f"optimizers: {', '.join(optimizers)}",
            e.span,
        )
    op = REGISTRY.get(e.name)
    if op is None or op.family != "optimizer":
        raise SpecError(
            f"unknown optimizer '{e.name}'",
            suggest(e.name, optimizers) or f"optimizers: {', '.join(optimizers)}",
            e.name_span,
        )
    args = el.args(e.args, el.globals, Frame())
    _, attrs = bind(op, args, el.kwargs(e.kwargs, el.globals, Frame()), e.span)
    try:
        attrs = op.resolve([], attrs)
    except SpecError as err:
        raise SpecError(err.message, err.hint, e.span) from None
    return op, attrs, e.span
