"""Derived models: `model Finetune = DigitsResNet(classes=4)` makes this spec's model the model
DigitsResNet of an imported file, with new defaults for the parameters the arguments give
(by position or by name, as in a call). A fine-tuning spec states what differs, the classes
and its train section, and the network stays written once.

The derived model is a Definition like any other, so nothing after the frontend knows it was
derived: the target's body (its layers, and so its state_dict keys: a checkpoint of the one
loads into the other) and its parameters, under the new name and at the `model X = ...` line
(errors about the model as a whole, and its docstring, the comments above that line). A given
parameter takes the argument as its default, with the argument's span, so that a value of the
wrong type is reported where it was written; `--param` still overrides it."""

from __future__ import annotations

import difflib
from dataclasses import replace

from dslc.diagnostics import Diagnostics, SpecError
from dslc.frontend import ast


def derive(
    d: ast.DerivedModel,
    models: dict[str, ast.Definition],
    blocks: dict[str, ast.Definition],
    diags: Diagnostics,
) -> ast.Definition | None:
    """The model `d` makes of one of `models` (the ones its file sees), or None after an error."""
    target = models.get(d.target)
    if target is None:
        _unknown(d, models, blocks, diags)
        return None
    try:
        params = _params(d, target)
    except SpecError as err:
        diags.error(err.span or d.span, err.message, err.hint)
        return None
    return ast.Definition(d.span, "model", d.name, params, target.body)


def _params(d: ast.DerivedModel, target: ast.Definition) -> tuple[ast.Param, ...]:
    names = [p.name for p in target.params]
    signature = f"{target.name}({', '.join(names)})"
    if len(d.args) > len(names):
        raise SpecError(
            f"model {target.name} takes {len(names)} parameter(s), got {len(d.args)}",
            signature,
            d.args[len(names)].span,
        )
    given = {n: (a, a.span) for n, a in zip(names, d.args, strict=False)}
    for kw in d.kwargs:
        if kw.name not in names:
            close = difflib.get_close_matches(kw.name, names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else signature
            raise SpecError(f"model {target.name} has no parameter '{kw.name}'", hint, kw.span)
        if kw.name in given:
            raise SpecError(
                f"model {target.name}: parameter '{kw.name}' is given twice", span=kw.span
            )
        given[kw.name] = (kw.value, kw.span)
    return tuple(
        replace(p, span=given[p.name][1], default=given[p.name][0]) if p.name in given else p
        for p in target.params
    )


def _unknown(
    d: ast.DerivedModel,
    models: dict[str, ast.Definition],
    blocks: dict[str, ast.Definition],
    diags: Diagnostics,
) -> None:
    if d.target in blocks:
        diags.error(
            d.target_span,
            f"{d.target} is a block, not a model: `model {d.name} = Name(...)` derives this "
            "spec's model from an imported model",
            f"call a block inside a model: model {d.name} {{ input x: ... output y = x -> "
            f"{d.target}(...) }}",
        )
        return
    close = difflib.get_close_matches(d.target, list(models), n=1)
    if close:
        hint = f"did you mean {close[0]}?"
    elif models:
        hint = f"the files imported define {', '.join(sorted(models))}"
    else:
        hint = 'import the file that defines it: import "file.dl"'
    diags.error(d.target_span, f"no imported file defines a model {d.target}", hint)
