"""Errors that are the user's to fix but have no place in a .dl file (a bad weights file, an
input array of the wrong shape). The CLI prints them as `dslc: error: ...` and exits with 1.
Errors inside a spec are Diagnostics (dslc.diagnostics), which carry a source span."""

from __future__ import annotations


class DslcError(Exception):
    """A user-facing error: `message`, and a `hint` where one helps."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"dslc: error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text
