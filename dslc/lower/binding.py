"""Binding a call's arguments to an op's signature: which are tensor inputs, which attributes
(positional in declaration order, or by keyword), each coerced and checked by its Attr."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dslc.diagnostics import Span, SpecError
from dslc.ir.graph import Value
from dslc.ops.base import OpDef, describe, suggest


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _signature(op: OpDef) -> str:
    """`conv2d(out_channels, kernel, stride=1, ...)`: the required arguments, one optional."""
    required = [a.name for a in op.attrs if a.required]
    optional = [f"{a.name}={a.default!r}" for a in op.attrs if not a.required][:1]
    more = ", ..." if len(op.attrs) > len(required) + len(optional) else ""
    return f"{op.name}({', '.join(required + optional)}{more})"


@dataclass
class Arg:
    value: Any
    span: Span
    code: Any = None  # the argument as Python source over the definition's names (lower.codes)


def by_name(names: list[str], given: int, kwargs: dict[str, Arg]) -> list[Value]:
    """Tensor inputs given by keyword (`attention(4, mask=m)`), taken out of `kwargs`: the
    inputs after the `given` positional ones, in order, while the call names them."""
    out: list[Value] = []
    for name in names[given:]:
        arg = kwargs.get(name)
        if arg is None or not isinstance(arg.value, Value):
            break
        out.append(kwargs.pop(name).value)
    return out


def bind(
    op: OpDef, args: list[Arg], kwargs: dict[str, Arg], span: Span
) -> tuple[list[Value], dict]:
    """Split a call's arguments into tensor inputs and coerced attributes."""
    tensors: list[Value] = []
    if op.inputs == ("*xs",):
        if not args or not isinstance(args[0].value, list) or not args[0].value:
            raise SpecError(
                f"{op.name} takes a list of tensors, such as `[a, b] -> {op.name}`", span=span
            )
        tensors, args = list(args[0].value), args[1:]
    elif any(i.startswith("*") for i in op.inputs):  # fixed inputs, then any number more
        while args and isinstance(args[0].value, Value | list):
            given_tensors = args.pop(0).value
            tensors += given_tensors if isinstance(given_tensors, list) else [given_tensors]
        if len(tensors) < len(op.inputs):
            raise SpecError(
                f"{op.name} takes {', '.join(i.lstrip('*') for i in op.inputs)}: at least "
                f"{count(len(op.inputs), 'tensor')}, got {len(tensors)}",
                span=span,
            )
    else:
        while args and isinstance(args[0].value, Value):
            tensors.append(args.pop(0).value)
        tensors += by_name([i.rstrip("?") for i in op.inputs], len(tensors), kwargs)
        if len(tensors) > len(op.inputs):
            raise SpecError(
                f"{op.name} takes {count(len(op.inputs), 'tensor input')}, got {len(tensors)}",
                span=span,
            )
    required = [i for i in op.inputs if not i.endswith("?") and not i.startswith("*")]
    if len(tensors) < len(required):
        raise SpecError(
            f"{op.name} takes {count(len(required), 'tensor input')}, got {len(tensors)}",
            span=span,
        )
    for t in tensors:
        if not isinstance(t, Value):
            raise SpecError(f"{op.name}: expected a tensor, got {describe(t)}", span=span)
    given: dict[str, Arg] = {}
    if len(args) > len(op.attrs):
        takes = f"at most {count(len(op.attrs), 'argument')}" if op.attrs else "no arguments"
        raise SpecError(
            f"{op.name} takes {takes} besides its input, got {len(args)}",
            hint=f"{op.name}({', '.join(a.name for a in op.attrs)})" if op.attrs else None,
            span=args[len(op.attrs)].span,
        )
    for attr, arg in zip(op.attrs, args, strict=False):
        given[attr.name] = arg
    names = [a.name for a in op.attrs]
    for key, arg in kwargs.items():
        if key not in names:
            hint = suggest(key, names) or (
                f"{op.name} takes {', '.join(names)}" if names else f"{op.name} takes no arguments"
            )
            raise SpecError(f"{op.name} has no argument '{key}'", hint, arg.span)
        if key in given:
            raise SpecError(f"{op.name}: argument '{key}' is given twice", span=arg.span)
        given[key] = arg
    attrs: dict[str, Any] = {}
    for attr in op.attrs:
        if attr.name in given:
            try:
                attrs[attr.name] = attr.coerce(op.name, given[attr.name].value)
            except SpecError as err:
                raise SpecError(err.message, err.hint, given[attr.name].span) from None
        elif attr.required:
            raise SpecError(
                f"{op.name}: missing argument '{attr.name}'", hint=_signature(op), span=span
            )
        else:
            attrs[attr.name] = attr.default
    return tensors, attrs
