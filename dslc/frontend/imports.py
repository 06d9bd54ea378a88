"""Imports: the files a spec imports, read, parsed and merged into one Program.

`import "other.dl"` names a file relative to the folder of the file that imports it;
`import std.vision` names a file of the library shipped inside dslc (dslc/stdlib/vision.dl),
shown in messages and outputs as `<std>/vision.dl` wherever dslc is installed, so that no
output depends on the install location. A file is read and parsed once, however many files
import it (a diamond). An imported file gives its blocks, its constants and its model, which
`model Name = Imported(...)` makes this spec's model of (frontend/derive.py); its train
section stays its own.

Every error about an import is located at the import line that caused it: a file that cannot
be read (with the path tried), a cycle (with its chain), a block, constant or model that two
files define (with both places), and the limits on all the files together (ir/limits). Errors
inside an imported file are located in that file: Diagnostics.sources holds its text."""

from __future__ import annotations

import difflib
import os
import posixpath
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lark

from dslc.diagnostics import Diagnostics, SpecError
from dslc.frontend import ast
from dslc.frontend.derive import derive
from dslc.frontend.parse import parse
from dslc.ir.limits import (
    MAX_SOURCE_BYTES,
    MAX_SOURCE_FILES,
    MAX_TOTAL_SOURCE_BYTES,
    MAX_TOTAL_SOURCE_LINES,
)

STDLIB = Path(__file__).resolve().parent.parent / "stdlib"
STD = "<std>"  # the library's folder in paths dslc shows
_KINDS = ("block", "constant", "model")  # what a file gives, in _File's order


def library_modules() -> list[str]:
    """The files of the shipped library, as imported: std.vision, std.transformer, ..."""
    return sorted(f"std.{p.stem}" for p in STDLIB.glob("*.dl"))


def resolve(program: ast.Program, diags: Diagnostics) -> ast.Program | None:
    """`program` with the blocks and constants of every file it imports, directly or not, put
    before its own, and its derived model made; None after an error in any import."""
    if not program.imports and not program.derived:
        return program
    loader = _Loader(diags, program)
    root = loader.visible(program, _folder(program.path))
    if diags.has_errors:
        return None
    return loader.merged(root.program)


def _folder(path: str) -> Path:
    """Where a spec's relative imports start: its folder, or the current one for a spec that
    is no file (`<stdin>`, a string compiled from Python)."""
    return Path(".") if path.startswith("<") else Path(path).parent


def _key(path: str) -> str:
    return path if path.startswith("<") else os.path.realpath(path)


@dataclass
class _File:
    program: ast.Program
    blocks: dict[str, ast.Definition]  # its own and those it imports, by name
    constants: dict[str, ast.Assign]
    models: dict[str, ast.Definition]  # likewise; a derived one made (frontend/derive.py)


class _Loader:
    def __init__(self, diags: Diagnostics, root: ast.Program) -> None:
        self.diags = diags
        self.loaded: dict[str, _File | None] = {}  # by real path; None: it failed
        self.order: list[_File] = []  # dependencies first
        self.active = [_key(root.path)]  # the chain of files being loaded, for cycles
        self.chain = [root.path]
        self.files, self.chars, self.lines = 1, len(root.source), _lines(root.source)

    # ---- one file's imports
    def visible(self, program: ast.Program, folder: Path) -> _File:
        """Load a file's imports and check the names it sees (theirs and its own) for clashes,
        each reported at the import that brought the second definition; make its derived
        model of the models it sees."""
        tables: dict[str, dict[str, tuple[Any, ast.Import]]] = {k: {} for k in _KINDS}
        for imp in program.imports:
            f = self.load(imp, program.path, folder)
            if f is not None:
                gives: tuple[dict[str, Any], ...] = (f.blocks, f.constants, f.models)
                for kind, given in zip(_KINDS, gives, strict=True):
                    self.take(kind, tables[kind], given, imp)
        seen = {kind: {k: item for k, (item, _) in tables[kind].items()} for kind in _KINDS}
        own_models = {d.name: d for d in program.definitions if d.kind == "model"}
        derived = self.derive(program, seen["model"] | own_models, seen["block"])
        program = replace(program, definitions=(*program.definitions, *derived), derived=())
        own: dict[str, dict[str, Any]] = {
            "block": {d.name: d for d in program.definitions if d.kind == "block"},
            "constant": {n: c for c in program.constants for n in c.names},
            "model": {d.name: d for d in program.definitions if d.kind == "model"},
        }
        for kind in _KINDS:
            for name in [n for n in own[kind] if n in tables[kind]]:
                item, imp = tables[kind][name]
                self.clash(kind, name, own[kind][name], item, imp)
        every = {kind: seen[kind] | own[kind] for kind in _KINDS}
        return _File(program, every["block"], every["constant"], every["model"])

    def derive(
        self, program: ast.Program, models: dict[str, ast.Definition], blocks: dict
    ) -> list[ast.Definition]:
        blocks = blocks | {d.name: d for d in program.definitions if d.kind == "block"}
        made = [derive(d, models, blocks, self.diags) for d in program.derived]
        return [d for d in made if d is not None]

    def take(self, kind: str, table: dict, given: dict, imp: ast.Import) -> None:
        for name, item in given.items():
            if name not in table:
                table[name] = item, imp
            elif table[name][0] is not item:  # a file imported twice gives the same one
                self.clash(kind, name, table[name][0], item, imp)

    def clash(self, kind: str, name: str, first, second, imp: ast.Import) -> None:
        self.diags.error(
            imp.span,
            f"{kind} '{name}' is defined in two files: {_place(first)} and {_place(second)}",
            f"a spec has one {kind} of each name: rename one of them",
        )

    # ---- one import
    def load(self, imp: ast.Import, importer: str, folder: Path) -> _File | None:
        located = self.locate(imp, importer, folder)
        if located is None:
            return None
        display, actual = located
        key = _key(str(actual))
        if key in self.active:
            chain = " -> ".join([*self.chain[self.active.index(key) :], display])
            self.error(
                imp,
                f"import cycle: {chain}",
                "a file cannot import itself, directly or through others: move the blocks "
                "both need into a file that both import",
            )
            return None
        if key not in self.loaded:
            self.loaded[key] = self.read_and_load(imp, display, actual, key)
        return self.loaded[key]

    def read_and_load(self, imp: ast.Import, display: str, actual: Path, key: str) -> _File | None:
        text = self.read(imp, display, actual)
        program = None if text is None else self.parse(imp, text, display)
        if program is None:
            return None
        self.active.append(key)
        self.chain.append(display)
        try:
            f = self.visible(program, actual.parent)
        finally:
            self.active.pop()
            self.chain.pop()
        self.order.append(f)
        return f

    def locate(self, imp: ast.Import, importer: str, folder: Path) -> tuple[str, Path] | None:
        """(the path shown, the path read) of an import."""
        if not imp.library:
            shown = posixpath.normpath(posixpath.join(posixpath.dirname(importer), imp.target))
            return shown, folder / imp.target
        parts = imp.target.split(".")
        if parts[0] != "std":
            self.error(
                imp,
                f"`import {imp.target}`: a name without quotes is a file of dslc's library, "
                "std.NAME",
                f'a file of your own is imported by its path in quotes: import "{parts[-1]}.dl"',
            )
            return None
        modules = library_modules()
        if imp.target not in modules:
            self.error(
                imp,
                f"dslc's library has no file {imp.target}",
                _did_you_mean(imp.target, modules)
                or f"it has {', '.join(modules)} (docs/stdlib.md)",
            )
            return None
        return f"{STD}/{parts[1]}.dl", STDLIB / f"{parts[1]}.dl"

    def read(self, imp: ast.Import, display: str, actual: Path) -> str | None:
        if self.files >= MAX_SOURCE_FILES:
            self.error(
                imp,
                f"this import makes the spec more than {MAX_SOURCE_FILES} files, beyond "
                "dslc's limit",
                "a spec and its imports are a few files of blocks",
            )
            return None
        try:
            info = actual.stat()
            if not stat.S_ISREG(info.st_mode):
                self.error(imp, f"cannot import {display}: {actual} is not a file")
                return None
            if info.st_size > 4 * MAX_SOURCE_BYTES:  # UTF-8: at most 4 bytes a character
                self.error(
                    imp,
                    f"cannot import {display}: it has {info.st_size:,} bytes, beyond dslc's "
                    f"limit of {MAX_SOURCE_BYTES:,} characters for a spec",
                )
                return None
            text = actual.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            self.error(
                imp,
                f'cannot import "{imp.target}": there is no file {actual}',
                "a path is relative to the folder of the file that imports it",
            )
            return None
        except (OSError, UnicodeDecodeError) as err:
            why = err.strerror if isinstance(err, OSError) else "it is not UTF-8 text"
            self.error(imp, f"cannot import {display}: {why}")
            return None
        self.files += 1
        self.chars += len(text)
        self.lines += _lines(text)
        if self.chars > MAX_TOTAL_SOURCE_BYTES or self.lines > MAX_TOTAL_SOURCE_LINES:
            self.error(
                imp,
                f"with {display}, the spec and its imports hold {self.lines:,} lines and "
                f"{self.chars:,} characters, beyond dslc's limit of "
                f"{MAX_TOTAL_SOURCE_LINES:,} lines and {MAX_TOTAL_SOURCE_BYTES:,} characters",
                "a spec and its imports are a few files of blocks",
            )
            return None
        return text

    def parse(self, imp: ast.Import, text: str, display: str) -> ast.Program | None:
        """The imported file's AST; its syntax errors are located in it."""
        self.diags.sources[display] = text
        try:
            return parse(text, display, self.diags)
        except lark.exceptions.VisitError as err:  # a literal the parser refuses
            if not isinstance(err.orig_exc, SpecError):
                raise
            cause = err.orig_exc
            self.diags.error(cause.span, cause.message, cause.hint)
        except RecursionError:
            self.error(imp, f"{display} nests expressions or pipelines too deeply")
        return None

    def error(self, imp: ast.Import, message: str, hint: str | None = None) -> None:
        self.diags.error(imp.span, message, hint)

    # ---- the result
    def merged(self, program: ast.Program) -> ast.Program:
        blocks = {d.name for d in program.definitions if d.kind == "block"}
        constants = {n for c in program.constants for n in c.names}
        defs, consts = [], []
        for f in self.order:  # their blocks: their models and train sections are their own
            defs += [d for d in f.program.definitions if d.kind == "block" and d.name not in blocks]
            consts += [c for c in f.program.constants if not constants & set(c.names)]
        return replace(
            program,
            constants=(*consts, *program.constants),
            definitions=(*defs, *program.definitions),
            sources={f.program.path: f.program.source for f in self.order},
        )


def _did_you_mean(name: str, names: list[str]) -> str | None:
    close = difflib.get_close_matches(name, names, n=1)
    return f"did you mean {close[0]}?" if close else None


def _lines(text: str) -> int:
    return text.count("\n") + 1


def _place(item: ast.Definition | ast.Assign | ast.TrainDef) -> str:
    return f"{item.span.path}:{item.span.line}"
