"""Block instances: binding a call's parameters, the record of each instance (its
definition, parameters and their call-site source, inputs, outputs and items), and expanding
a block's body in a frame of its own."""

from __future__ import annotations

import ast as py
from typing import Any

from dslc.diagnostics import Span, SpecError
from dslc.frontend import ast
from dslc.ir import structure as st
from dslc.ir.graph import Value
from dslc.lower import codes
from dslc.lower.binding import Arg, by_name, count
from dslc.lower.names import key as site_key
from dslc.lower.names import site_names, snake
from dslc.lower.scope import POISON, Frame, Poisoned, Scope
from dslc.lower.structure import Structure
from dslc.ops.base import REGISTRY, describe, suggest

PARAM_TYPES: dict[str, type[Any] | tuple[type[Any], ...]] = {
    "int": int,
    "float": (int, float),
    "bool": bool,
    "str": str,
}


class Blocks(Structure):
    """Supplied by the Elaborator: the file's program and diagnostics, the block definitions,
    the blocks being expanded, and a statement body's elaboration."""

    program: ast.Program
    diags: Any
    active: list[str]
    sites: dict[str, Any]
    globals: Scope

    def body(self, d, frame, scope, ins, graph) -> dict[str, Any]:
        raise NotImplementedError

    def instance(
        self, d: ast.Definition, path: str, scope: Scope, param_codes: dict[str, str]
    ) -> st.Instance:
        """The record of one instance of `d` (the model: path "")."""
        defaults = {}
        for p in d.params:
            if isinstance(p.default, ast.Literal):
                defaults[p.name] = p.default.value
        return st.Instance(
            d.name,
            path,
            {p.name: scope.vars.get(p.name) for p in d.params},
            param_codes,
            doc_comment(self.program.source_of(d.span.path), d.span.line),
            defaults=defaults,
            param_types={p.name: p.type for p in d.params},
        )

    def collect_blocks(self) -> None:
        for d in self.program.definitions:
            if d.kind != "block":
                continue
            if d.name in self.blocks:
                self.diags.error(
                    d.span,
                    f"block '{d.name}' is defined twice "
                    f"(first at line {self.blocks[d.name].span.line})",
                )
            elif d.name in REGISTRY:
                self.diags.error(
                    d.span,
                    f"block '{d.name}' has the name of a built-in {REGISTRY[d.name].family} op",
                )
            else:
                self.blocks[d.name] = d

    def call_block(
        self, d: ast.Definition, span: Span, args: list[Arg], kwargs: dict[str, Arg], frame: Frame
    ) -> Any:
        names = input_names(d)
        n_in = len(names)
        tensors = [a.value for a in args[:n_in] if isinstance(a.value, Value)]
        positional = len(tensors)
        kwargs = dict(kwargs)
        tensors += by_name(names, positional, kwargs)
        if len(tensors) != n_in:
            raise SpecError(
                f"block {d.name} takes {count(n_in, 'tensor input')}, got {len(tensors)}",
                span=span,
            )
        if d.name in self.active:
            raise SpecError(f"block {d.name} calls itself", span=span)
        scope = Scope(self.globals)
        self.bind_params(d, args[positional:], kwargs, scope, span)
        scope.codes = {p.name: py.Name(p.name, py.Load()) for p in d.params}
        for i, (name, t) in enumerate(zip(names, tensors, strict=True)):
            dims: list[py.expr] = [codes.dim_marker(i, k) for k in range(t.type.rank)]
            scope.codes[codes.shape_key(name)] = py.List(dims, py.Load())
        path = frame.module_name(site_key(span), snake(d.name))
        instance = self.instance(d, path, scope, param_codes(d, args[positional:], kwargs))
        instance.inputs = list(tensors)
        instance.input_names = names
        inner = Frame(path + ".", self.block_sites(d), instance.items, (d.name, span), frame)
        self.instances[path] = d.name
        self.active.append(d.name)
        hint = self.hint
        try:
            outputs = self.body(d, inner, scope, list(tensors), None)
        finally:
            self.active.pop()
            self.hint = hint
        if any(v is POISON for v in outputs.values()):
            raise Poisoned()
        if not outputs:
            raise SpecError(
                f"block {d.name} declares no output", "add `output y = ...` to the block", d.span
            )
        values = tuple(outputs.values())
        instance.outputs, instance.output_names = list(values), list(outputs)
        if frame.items is not None:
            frame.items.append(st.CallItem(instance, hint))
        return values[0] if len(values) == 1 else values

    def block_sites(self, d: ast.Definition):
        if d.name not in self.sites:
            self.sites[d.name] = site_names(d.body, set(self.blocks))
        return self.sites[d.name]

    def bind_params(
        self,
        d: ast.Definition,
        args: list[Arg],
        kwargs: dict,
        scope: Scope,
        span: Span,
        overrides_given: bool = False,
    ) -> None:
        """Bind a block's (or the model's) compile-time parameters: positional, keyword, default."""
        names = [p.name for p in d.params]
        if len(args) > len(names):
            raise SpecError(
                f"{d.kind} {d.name} takes {len(names)} parameter(s), got {len(args)}",
                hint=f"{d.name}({', '.join(names)})",
                span=args[len(names)].span,
            )
        given = {p.name: a for p, a in zip(d.params, args, strict=False)}
        for key, arg in kwargs.items():
            if key not in names:
                if overrides_given:
                    raise SpecError(
                        f"model {d.name} has no parameter '{key}'", suggest(key, names), d.span
                    )
                raise SpecError(
                    f"{d.kind} {d.name} has no parameter '{key}'",
                    suggest(key, names),
                    getattr(arg, "span", span),
                )
            if key in given:
                raise SpecError(
                    f"{d.kind} {d.name}: parameter '{key}' is given twice",
                    span=getattr(arg, "span", span),
                )
            given[key] = arg if isinstance(arg, Arg) else Arg(arg, d.span)
        for p in d.params:
            if p.type not in PARAM_TYPES:
                raise SpecError(
                    f"unknown parameter type '{p.type}'", f"one of {', '.join(PARAM_TYPES)}", p.span
                )
            if p.name in given:
                value, where = given[p.name].value, given[p.name].span
            elif p.default is not None:
                value, where = self.eval(p.default, scope, Frame()), p.span
            elif overrides_given:
                raise SpecError(
                    f"model parameter '{p.name}' has no value",
                    span=p.span,
                    hint=f"give it a default (`{p.name}: {p.type} = ...`) "
                    f"or pass --param {p.name}=VALUE",
                )
            else:
                raise SpecError(f"{d.kind} {d.name}: missing parameter '{p.name}'", span=span)
            if (
                isinstance(value, bool)
                and p.type != "bool"
                or not isinstance(value, PARAM_TYPES[p.type])
            ):
                raise SpecError(
                    f"{d.kind} {d.name}: parameter '{p.name}' is {p.type}, got {describe(value)}",
                    span=where,
                )
            scope.define(p.name, float(value) if p.type == "float" else value, p.span)


def param_codes(d: ast.Definition, args: list[Arg], kwargs: dict) -> dict[str, str]:
    """The Python source a call site gives for each parameter it passes."""
    out = {p.name: a.code for p, a in zip(d.params, args, strict=False)}
    out |= {k: a.code for k, a in kwargs.items() if isinstance(a, Arg)}
    return {k: text for k, c in out.items() if (text := codes.source(c)) is not None}


def doc_comment(source: str, line: int) -> str:
    """The comment lines right above line `line` (1-based), without their `#`: a block's
    docstring in the generated code."""
    lines = source.splitlines()
    out: list[str] = []
    i = line - 2
    while 0 <= i < len(lines) and lines[i].lstrip().startswith("#"):
        out.insert(0, lines[i].lstrip()[1:].strip())
        i -= 1
    return "\n".join(out)


def input_names(d: ast.Definition) -> list[str]:
    return [s.name for s in d.body if isinstance(s, ast.InputDecl)]
