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

    @classmethod
    def start_of(cls, path: str) -> Span:
        """Line 1, column 1: where a message about the whole file points, so that it still has
        a place an editor can jump to."""
        return cls(path, 1, 1, 1, 2)


@dataclass(frozen=True)
class Diagnostic:
    span: Span | None
    message: str
    hint: str | None = None
    severity: str = "error"

    def render(self, source: str | None, color: bool = False) -> str:
        return self.render_lines(None if source is None else source.splitlines(), color)

    def render_lines(self, source_lines: list[str] | None, color: bool = False) -> str:
        """render() on a source already split into lines: Diagnostics.render splits it once for
        all its diagnostics (splitting it for each made thousands of errors quadratic)."""
        where = _paint(f"{self.span}:", "where", color) + " " if self.span else ""
        severity = _paint(f"{self.severity}:", self.severity, color)
        lines = [f"{where}{severity} {_paint(self.message, 'message', color)}"]
        if self.span and source_lines is not None:
            lines += _excerpt(source_lines, self.span, color)
        if self.hint:
            lines.append(f"  {_paint('hint:', 'hint', color)} {self.hint}")
        return "\n".join(lines)


# ANSI styles for a terminal (dslc.cli decides when to use them): the severity in bold red, the
# caret line in bold green, `hint:` in cyan, as compilers commonly do. Without colour the text
# is exactly the plain rendering, so the error goldens hold for both.
_STYLES = {
    "error": "1;31",
    "where": "1",
    "message": "1",
    "caret": "1;32",
    "hint": "1;36",
}


def _paint(text: str, role: str, color: bool) -> str:
    if not color or not text:
        return text
    return f"\033[{_STYLES.get(role, '1')}m{text}\033[0m"


def _excerpt(source_lines: list[str], span: Span, color: bool = False) -> list[str]:
    if not 1 <= span.line <= len(source_lines):
        return []
    text = source_lines[span.line - 1].expandtabs(1).rstrip()
    end = span.end_column if span.end_line == span.line else len(text) + 1
    column = span.column
    width = max(1, min(end, len(text) + 1) - column)
    if len(text) > EXCERPT:  # a megabyte on one line: the part around the column, marked
        start = max(0, column - 1 - EXCERPT // 2)
        shown = text[start : start + EXCERPT]
        text = ("..." if start else "") + shown + ("..." if start + EXCERPT < len(text) else "")
        column = column - start + (3 if start else 0)
        width = min(width, EXCERPT - (column - 1) + (3 if start else 0))
    gutter = f"{span.line:>5} | "
    caret = "^" + "~" * (max(1, width) - 1)
    return [
        gutter + text,
        " " * (len(gutter) - 2) + "| " + " " * (column - 1) + _paint(caret, "caret", color),
    ]


EXCERPT = 200  # the most of one source line an error shows


@dataclass
class Diagnostics:
    """Collects diagnostics so that one run reports as many independent errors as it can."""

    source: str
    items: list[Diagnostic] = field(default_factory=list)
    # the text of every imported file by its path (frontend/imports), so that an error inside
    # one shows that file's line; any other path is shown against `source`
    sources: dict[str, str] = field(default_factory=dict)
    # (span, message) of every item, so that `seen` is one lookup however many errors there are
    _keys: set[tuple[Span | None, str]] = field(
        default_factory=set, init=False, repr=False, compare=False
    )

    def error(self, span: Span | None, message: str, hint: str | None = None) -> None:
        self.items.append(Diagnostic(span, message, hint))
        self._keys.add((span, message))

    def seen(self, span: Span | None, message: str) -> bool:
        """Whether this message was already reported at this place (a block expanded twice
        reports its mistake once). A set lookup: scanning `items` made 20,000 errors quadratic."""
        return (span, message) in self._keys

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def render(self, color: bool = False) -> str:
        split: dict[str | None, list[str]] = {None: self.source.splitlines()}
        for path, text in self.sources.items():
            split[path] = text.splitlines()
        return "\n".join(
            d.render_lines(split.get(d.span.path if d.span else None, split[None]), color)
            for d in self.items
        )


class CompileError(Exception):
    """Raised by the API when a spec has errors; `diagnostics` holds them all."""

    def __init__(self, diagnostics: Diagnostics) -> None:
        super().__init__()
        self.diagnostics = diagnostics

    def __str__(self) -> str:  # rendered when asked: dslc.check() never needs the text
        return self.diagnostics.render()


class SpecError(Exception):
    """Raised inside the compiler at the point a rule fails; turned into a Diagnostic by the caller,
    which knows the span. Shape rules and attribute checks raise it."""

    def __init__(self, message: str, hint: str | None = None, span: Span | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.span = span
