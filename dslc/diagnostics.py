"""Source spans and diagnostics: every error dslc reports about a spec points at its place.

A Diagnostic renders as

    specs/bad.dl:7:8: error: linear expects 400 input features, got 256
        7 |     -> linear(120, in_features=400)
          |        ^~~~~~~~~~~~~~~~~~~~~~~~~~~~
      hint: ...
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A region of a source file: 1-based line and column of its start and end (end exclusive)."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Diagnostic:
    span: Span | None
    message: str
    hint: str | None = None
    severity: str = "error"

    def render(self, source: str | None) -> str:
        where = f"{self.span}: " if self.span else ""
        lines = [f"{where}{self.severity}: {self.message}"]
        if self.span and source is not None:
            lines += _excerpt(source, self.span)
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


def _excerpt(source: str, span: Span) -> list[str]:
    text_lines = source.splitlines()
    if not 1 <= span.line <= len(text_lines):
        return []
    text = text_lines[span.line - 1].expandtabs(1)
    end = span.end_column if span.end_line == span.line else len(text) + 1
    width = max(1, min(end, len(text.rstrip()) + 1) - span.column)
    gutter = f"{span.line:>5} | "
    return [
        gutter + text.rstrip(),
        " " * (len(gutter) - 2) + "| " + " " * (span.column - 1) + "^" + "~" * (width - 1),
    ]


@dataclass
class Diagnostics:
    """Collects diagnostics so that one run reports as many independent errors as it can."""

    source: str
    items: list[Diagnostic] = field(default_factory=list)

    def error(self, span: Span | None, message: str, hint: str | None = None) -> None:
        self.items.append(Diagnostic(span, message, hint))

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def render(self) -> str:
        return "\n".join(d.render(self.source) for d in self.items)


class CompileError(Exception):
    """Raised by the API when a spec has errors; `diagnostics` holds them all."""

    def __init__(self, diagnostics: Diagnostics) -> None:
        super().__init__(diagnostics.render())
        self.diagnostics = diagnostics


class SpecError(Exception):
    """Raised inside the compiler at the point a rule fails; turned into a Diagnostic by the caller,
    which knows the span. Shape rules and attribute checks raise it."""

    def __init__(self, message: str, hint: str | None = None, span: Span | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.span = span
