"""The library reference, docs/stdlib.md, generated from the library's own files
(dslc/stdlib/*.dl) so that it cannot drift from them: each file's opening comment, then each
block's signature, the comment right above it (its docstring in the generated code too) and a
table of its parameters. `python -m dslc.tools.stdlibdoc docs/stdlib.md` writes it;
tests/test_docs.py fails when the file and `render()` differ."""

from __future__ import annotations

import sys
from pathlib import Path

from dslc.diagnostics import Diagnostics
from dslc.frontend import ast
from dslc.frontend.imports import STD, STDLIB, library_modules
from dslc.frontend.parse import parse
from dslc.lower.blocks import doc_comment
from dslc.tools.docgen import write_doc

INTRO = """\
# The standard library of blocks

Blocks that ship with dslc, for specs to import instead of writing them again:
`import std.vision` makes every block of `dslc/stdlib/vision.dl` callable as if the spec
defined it ([language.md](language.md#imports)). Each block builds the same layers, in the same
order and with the same shapes, as the implementation it names, which the tests compare it
with (parameter counts, and outputs under the same weights); tests/test_stdlib.py.

This page is generated from the library's files by `python -m dslc.tools.stdlibdoc
docs/stdlib.md`; change the comments there.
"""


def render() -> str:
    parts = [INTRO]
    for module in library_modules():
        parts.append(_module(module))
    return "\n".join(parts)


def _module(module: str) -> str:
    name = module.removeprefix("std.")
    source = (STDLIB / f"{name}.dl").read_text(encoding="utf-8")
    program = parse(source, f"{STD}/{name}.dl", Diagnostics(source))
    assert program is not None, f"{module} does not parse"  # tests/test_stdlib.py compiles it
    lines = [f"## `{module}`", "", _opening(source), ""]
    for d in program.definitions:
        lines += _block(d, source)
    return "\n".join(lines)


def _opening(source: str) -> str:
    """The file's first comment paragraph, as text."""
    out = []
    for line in source.splitlines():
        if not line.startswith("#"):
            break
        out.append(line[1:].strip())
    return " ".join(out).replace("  ", " ")


def _block(d: ast.Definition, source: str) -> list[str]:
    inputs = [s.name for s in d.body if isinstance(s, ast.InputDecl)]
    lines = [f"### `{d.name}`", "", doc_comment(source, d.span.line).replace("\n", " "), ""]
    outputs = [s.name for s in d.body if isinstance(s, ast.OutputDecl)]
    lines += [f"Tensor inputs: {', '.join(f'`{n}`' for n in inputs)}.", ""]
    if len(outputs) > 1:
        lines += [f"Outputs: {', '.join(f'`{n}`' for n in outputs)}.", ""]
    if d.params:
        lines += ["| parameter | type | default |", "|---|---|---|"]
    for p in d.params:
        default = "required" if p.default is None else f"`{_text(source, p.default.span)}`"
        lines.append(f"| `{p.name}` | {p.type} | {default} |")
    call = ", ".join(inputs + [p.name for p in d.params if p.default is None])
    names = ", ".join(outputs) if len(outputs) > 1 else "y"
    lines += ([""] if d.params else []) + ["```dl", f"import {_module_of(d)}"]
    lines += [f"{names} = {d.name}({call})", "```", ""]
    return lines


def _module_of(d: ast.Definition) -> str:
    return "std." + Path(d.span.path).stem


def _text(source: str, span) -> str:
    """The source text of a one-line span (a parameter's default)."""
    line = source.splitlines()[span.line - 1]
    return line[span.column - 1 : span.end_column - 1]


def main(argv: list[str] | None = None) -> int:
    return write_doc(render, argv, "stdlibdoc", lambda: f"{len(library_modules())} files")


if __name__ == "__main__":
    sys.exit(main())
