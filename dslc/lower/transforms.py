"""Lowering of the image pipelines of a train section: `preprocess = [resize(36),
center_crop(32), normalize(mean=[0.5], std=[0.25])]` and `augment = [...]`, lists of steps
from dslc.transforms with compile-time arguments, checked here with the step's span."""

from __future__ import annotations

from typing import Any

from dslc.diagnostics import SpecError
from dslc.frontend import ast
from dslc.lower.scope import Frame, Scope
from dslc.ops.base import suggest
from dslc.transforms import STEPS, Pipeline, Transform

EXAMPLE = "[resize(36), center_crop(32), normalize(mean=[0.5], std=[0.25])]"


def lower_pipeline(el: Any, key: str, e: ast.Expr, scope: Scope) -> Pipeline:
    """The checked steps of `key = [...]`; random steps only in `augment`, normalize last."""
    if not isinstance(e, ast.ListExpr):
        raise SpecError(f"{key} is a list of steps, such as {EXAMPLE}", _steps_hint(), e.span)
    steps = tuple(_transform(el, item, scope) for item in e.items)
    for i, (t, item) in enumerate(zip(steps, e.items, strict=True)):
        if t.step.random and key == "preprocess":
            raise SpecError(
                f"{t.step.name} is random: it belongs in augment (training), not preprocess, "
                "which prepares evaluation images the same way every time",
                "give the training steps as `augment = [...]`",
                item.span,
            )
        if t.step.name == "normalize" and i != len(steps) - 1:
            raise SpecError(f"normalize is the last step of {key}", span=item.span)
    return steps


def _transform(el: Any, e: ast.Expr, scope: Scope) -> Transform:
    if not isinstance(e, ast.Call):
        raise SpecError("a step is a call such as resize(36)", _steps_hint(), e.span)
    step = STEPS.get(e.name)
    if step is None:
        hint = suggest(e.name, list(STEPS)) or _steps_hint()
        raise SpecError(f"unknown image step '{e.name}'", hint, e.name_span)
    if len(e.args) > len(step.attrs):
        raise SpecError(
            f"{step.name} takes at most {len(step.attrs)} positional arguments", span=e.span
        )
    given = dict(zip([a.name for a in step.attrs], el.args(e.args, scope, Frame()), strict=False))
    for name, arg in el.kwargs(e.kwargs, scope, Frame()).items():
        if name not in {a.name for a in step.attrs} or name in given:
            why = "is given twice" if name in given else "is no argument of it"
            raise SpecError(f"{step.name}: '{name}' {why}", _args_hint(step), arg.span)
        given[name] = arg
    attrs = {}
    for a in step.attrs:
        if a.name not in given:
            if a.required:
                raise SpecError(f"{step.name} needs {a.name}", _args_hint(step), e.span)
            attrs[a.name] = a.default
            continue
        try:
            attrs[a.name] = a.coerce(step.name, given[a.name].value)
        except SpecError as err:
            raise SpecError(err.message, err.hint, given[a.name].span) from None
    problem = step.check(attrs)
    if problem:
        raise SpecError(f"{step.name}: {problem}", span=e.span)
    return Transform(step, attrs)


def _steps_hint() -> str:
    return f"steps: {', '.join(STEPS)}"


def _args_hint(step: Any) -> str:
    return f"{step.name}({', '.join(a.name for a in step.attrs)})"
