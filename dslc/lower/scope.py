"""Names during elaboration: lexical scopes of values, and frames that name nodes and values
uniquely (`conv1`, `res2.conv1`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dslc.diagnostics import Span, SpecError
from dslc.ops.base import suggest


class Poison:
    """The value of a name whose statement failed: using it aborts the using statement silently,
    so one mistake gives one error."""

    def describe(self) -> str:
        return "an erroneous value"


POISON = Poison()


class Poisoned(Exception):
    """A statement used a poisoned value; its error was already reported."""


@dataclass
class Scope:
    parent: Scope | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    spans: dict[str, Span] = field(default_factory=dict)

    def lookup(self, name: str, span: Span) -> Any:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.vars:
                value = scope.vars[name]
                if value is POISON:
                    raise Poisoned()
                return value
            scope = scope.parent
        raise SpecError(f"undefined name '{name}'", hint=suggest(name, self.names()), span=span)

    def define(self, name: str, value: Any, span: Span) -> None:
        if name in self.vars:
            line = self.spans[name].line
            raise SpecError(
                f"'{name}' is already defined (line {line})",
                hint="each name is assigned once; choose a new name for the new value",
                span=span,
            )
        self.vars[name] = value
        self.spans[name] = span

    def names(self) -> list[str]:
        out: list[str] = []
        scope: Scope | None = self
        while scope is not None:
            out += list(scope.vars)
            scope = scope.parent
        return out


def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


@dataclass
class Frame:
    """One instance of a model or block: the dotted path of its nodes, counters per prefix, and
    where it was called from (for notes on errors inside blocks)."""

    path: str = ""
    call_site: tuple[str, Span] | None = None
    parent: Frame | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def name(self, prefix: str) -> str:
        self.counters[prefix] = self.counters.get(prefix, 0) + 1
        return f"{self.path}{prefix}{self.counters[prefix]}"

    def child(self, block: str, span: Span) -> Frame:
        return Frame(self.name(snake(block)) + ".", (block, span), self)

    def note(self) -> str | None:
        sites: list[str] = []
        frame: Frame | None = self
        while frame is not None and frame.call_site is not None:
            block, span = frame.call_site
            sites.append(f"in block {block} called at line {span.line}")
            frame = frame.parent
        return "; ".join(sites) or None
