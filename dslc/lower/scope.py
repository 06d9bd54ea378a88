"""Names during elaboration: lexical scopes of values, and frames that name nodes and values
uniquely (`conv1`, `layer1.0.conv1`) and record what each block instance holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dslc.diagnostics import Span, SpecError
from dslc.lower.names import Key, Numbering, Sites
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
    codes: dict[str, Any] = field(default_factory=dict)  # name -> Python source (lower.codes)
    spell_checks: int = 50  # "did you mean" hints left (counted on the root scope)

    def all_codes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        scope: Scope | None = self
        while scope is not None:
            out = {**scope.codes, **out}
            scope = scope.parent
        return out

    def lookup(self, name: str, span: Span) -> Any:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.vars:
                value = scope.vars[name]
                if value is POISON:
                    raise Poisoned()
                return value
            scope = scope.parent
        root = self
        while root.parent is not None:
            root = root.parent
        hint = None
        if root.spell_checks > 0:  # bounded, as clang's -fspell-checking-limit: linear errors
            root.spell_checks -= 1
            hint = suggest(name, self.names())
        raise SpecError(f"undefined name '{name}'", hint=hint, span=span)

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
            out += [k for k, v in scope.vars.items() if v is not POISON]
            scope = scope.parent
        return out


@dataclass
class Frame:
    """Where the nodes being built go: the dotted path of their names, the static names of the
    definition's module sites, the list that records the instance's items, and where it was
    called from (for notes on errors inside blocks).

    Inside a named sequence (or a repetition of several layers) `seq` holds the next index, so
    each stage is named `features.0`, `features.1`, ...; in a copy of a repetition of one
    module, `single` is the name that module takes (`blocks.3`)."""

    path: str = ""
    sites: Sites = field(default_factory=Sites)
    items: list | None = None
    call_site: tuple[str, Span] | None = None
    parent: Frame | None = None
    numbering: Numbering = field(default_factory=Numbering)  # names of non-module nodes
    seq: list[int] | None = None
    single: str | None = None

    def name(self, prefix: str) -> str:
        """A fresh name for a node that is no module (its IR and ONNX name only)."""
        return self.path + self.numbering.next(prefix, self.sites.taken)

    def module_name(self, site: Key | None, prefix: str) -> str:
        """The name of a module made at `site`: its index in a sequence, a repetition's slot,
        or its static name."""
        if self.seq is not None:
            index = self.seq[0]
            self.seq[0] += 1
            return f"{self.path}{index}"
        if self.single is not None:
            name, self.single = self.single, None
            return name
        if site is not None and site in self.sites.names:
            return self.path + self.sites.names[site]
        return self.name(prefix)

    def within(self, path: str, **changes: Any) -> Frame:
        """A frame for the stages of a repetition copy or a sequence, in the same definition."""
        frame = Frame(path, self.sites, self.items, self.call_site, self.parent)
        for k, v in changes.items():
            setattr(frame, k, v)
        return frame

    def note(self, path: str) -> str | None:
        """Where the blocks around an error in file `path` were called: `line 5` in that
        file, `specs/x.dl:5` in another (a block imported from a library)."""
        sites: list[str] = []
        frame: Frame | None = self
        while frame is not None:
            if frame.call_site is not None:
                block, span = frame.call_site
                at = f"line {span.line}" if span.path == path else f"{span.path}:{span.line}"
                sites.append(f"in block {block} called at {at}")
            frame = frame.parent
        return "; ".join(sites) or None
