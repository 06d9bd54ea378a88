"""Parsing: .dl text -> AST. Lark in LALR mode with positions on; syntax errors become
Diagnostics, named from a table of known mistakes where one matches (as lark's own
error_reporting_lalr example does)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import cast

import lark
from lark import Token, Transformer, v_args

from dslc.diagnostics import Diagnostics, Span, SpecError
from dslc.frontend import ast
from dslc.ir.limits import MAX_INT, MAX_SOURCE_BYTES, MAX_SOURCE_LINES

_GRAMMAR_NAME = "dslc.lark"


def grammar_path() -> Path:
    """The grammar ships inside the wheel as dslc/grammar/; in a source tree it is grammar/ at
    the repository's top."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "grammar", package.parent / "grammar"):
        if (candidate / _GRAMMAR_NAME).is_file():
            return candidate / _GRAMMAR_NAME
    raise FileNotFoundError(f"dslc's grammar ({_GRAMMAR_NAME}) is missing from {package}")


@cache
def parser() -> lark.Lark:
    # Built afresh in each process (about 30 ms), never with lark's cache=True: that cache is a
    # pickle in the shared temp directory at a name anyone can compute, which lark unpickles on
    # every run, so a file planted there would run its payload on `dslc check`.
    return lark.Lark(
        grammar_path().read_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


# The largest literals a spec may hold: sizes and attributes are 64-bit integers, so a larger
# integer can never be valid, and a number beyond float64's range would silently become inf.
_INT_MAX_DIGITS = len(str(MAX_INT))


# Known mistakes -> the message to give. Each example is a whole (bad) file; the parser state in
# which it fails names the mistake. tests/test_syntax.py checks every entry still matches.
SYNTAX_ERRORS: dict[str, list[str]] = {
    "unclosed '{': the file ends inside a model, block or train section": [
        "model M { input x: f32[N, 2]",
        "model M { y = x -> relu",
        "train { epochs = 3",
    ],
    "a statement here must be `name = expression`, `input`, `output` or `target`": [
        "model M { 3 }",
        "model M { input x: f32[N, 2] 3 }",
        "model M { input x: f32[N, 2] -> relu }",
    ],
    "a name at the start of a statement begins an assignment, `name = expression`": [
        "model M { y x }",
        "model M { x -> relu }",
        "x -> relu",
        "models M { }",
    ],
    "a tensor type is a dtype and a shape, such as f32[N, 3, 32, 32]": [
        "model M { input x: [N, 3] }",
        "model M { input x: f32 }",
        "model M { input x: f32(N) }",
    ],
    "a parameter needs a type, such as `width: int` or `rate: float = 0.5`": [
        "block B(width) { }",
        "block B(width = 3) { }",
    ],
    "a target needs a type, such as `target y: i64[N]`": [
        "train { target y loss = mse(a, y) }",
        "train { target y }",
    ],
    "unclosed '(' in a call": [
        "model M { y = x -> linear(3 }",
        "model M { y = relu(x }",
    ],
    "an expression is missing here": [
        "model M { y = }",
        "model M { y = x -> }",
        "model M { y = linear(3, ) }",
        "model M { y = x + }",
    ],
    "a pipeline stage is a layer or block, such as `-> relu` or `-> linear(10)`": [
        "model M { y = x -> 3 }",
        'model M { y = x -> "relu" }',
        "model M { y = x -> [a] }",
    ],
    "an import belongs at the top level of the file, outside models, blocks and train": [
        'model M { import "blocks.dl" }',
        'model M { input x: f32[N, 2] import "blocks.dl" }',
        "block B { input x import std.vision }",
    ],
    "a file holds `model`, `block` and `train` sections, imports and `name = value` constants": [
        "input x: f32[N]",
        "3",
        "-> relu",
    ],
}


def parse(source: str, path: str, diags: Diagnostics) -> ast.Program | None:
    if too_long(source, path, diags):
        return None
    try:
        tree = parser().parse(source)
    except lark.exceptions.UnexpectedInput as err:
        diags.error(*_describe(err, source, path))
        return None
    return _ToAst(path, source).transform(tree)


def too_long(source: str, path: str, diags: Diagnostics) -> bool:
    """A spec beyond the text limits is refused, at the first line past them, before Lark
    spends seconds parsing it."""
    lines = source.count("\n") + 1
    if lines <= MAX_SOURCE_LINES and len(source) <= MAX_SOURCE_BYTES:
        return False
    if lines > MAX_SOURCE_LINES:
        line, what = (
            MAX_SOURCE_LINES + 1,
            f"{lines:,} lines, beyond dslc's limit of {MAX_SOURCE_LINES:,}",
        )
    else:
        line = source.count("\n", 0, MAX_SOURCE_BYTES) + 1
        what = f"{len(source):,} characters, beyond dslc's limit of {MAX_SOURCE_BYTES:,}"
    diags.error(
        Span(path, line, 1, line, 2),
        f"the spec has {what}",
        "a spec describes a model in a few hundred lines; weights and data belong in files",
    )
    return True


def _describe(err: lark.exceptions.UnexpectedInput, source: str, path: str):
    line, column = max(err.line, 1), max(err.column, 1)
    token = getattr(err, "token", None)
    if isinstance(err, lark.exceptions.UnexpectedEOF) or (
        token is not None and token.type == "$END"
    ):
        line, column = _end_position(source)
    width = (
        len(err.token)
        if isinstance(err, lark.exceptions.UnexpectedToken) and err.token.type != "$END"
        else 1
    )
    span = Span(path, line, column, line, column + max(width, 1))
    if isinstance(err, lark.exceptions.UnexpectedCharacters):
        char = source[cast(int, err.pos_in_stream)]  # lark declares it None; the lexer sets it
        if char == '"':
            return span, "unterminated string", 'strings are written "like this", on one line'
        return (
            span,
            f"unexpected character {char!r}",
            "comments start with #; statements need no ';'",
        )
    found = _found(err)
    label = _label(err)
    if token is not None and token.type == "$END" and _unclosed_braces(source):
        label = "unclosed '{': the file ends inside a model, block or train section"
    if label:
        return span, f"{label} (found {found})", None
    accepts = getattr(err, "accepts", None) or getattr(err, "expected", None) or ()
    expected = sorted({_terminal_text(t) for t in accepts})
    hint = f"expected {_one_of(expected)}" if expected else None
    return span, f"unexpected {found}", hint


@cache
def _labels() -> dict[int, list[tuple[str, str]]]:
    """LALR state -> [(token type, label)] for every example of SYNTAX_ERRORS. Matching on the
    state alone (not the stack, as lark's match_examples does) makes a label fire at any depth."""
    table: dict[int, list[tuple[str, str]]] = {}
    for label, examples in SYNTAX_ERRORS.items():
        for example in examples:
            try:
                parser().parse(example)
            except lark.exceptions.UnexpectedToken as err:
                table.setdefault(err.state.position, []).append((err.token.type, label))
    return table


def _label(err: lark.exceptions.UnexpectedInput) -> str | None:
    state = getattr(err, "state", None)
    if not isinstance(err, lark.exceptions.UnexpectedToken) or state is None:
        return None
    candidates = _labels().get(state.position, [])
    for token_type, label in candidates:  # prefer an example that failed on the same token
        if token_type == err.token.type:
            return label
    # an example that failed at the end of the file says nothing about a token in the middle
    others = [
        label
        for token_type, label in candidates
        if (token_type == "$END") == (err.token.type == "$END")
    ]
    return others[0] if others else None


def _unclosed_braces(source: str) -> bool:
    """More '{' than '}' outside comments and strings."""
    code = re.sub(r'#[^\n]*|"[^"\n]*"', "", source)
    return code.count("{") > code.count("}")


def _found(err: lark.exceptions.UnexpectedInput) -> str | None:
    token = getattr(err, "token", None)
    if token is None or token.type == "$END":
        return "end of file"
    return f"{token.value!r}" if token.type != "NAME" else f"name {token.value!r}"


def _end_position(source: str) -> tuple[int, int]:
    lines = source.rstrip().splitlines() or [""]
    return len(lines), len(lines[-1]) + 1


def _terminal_text(name: str) -> str:
    named = {
        "NAME": "a name",
        "INT": "an integer",
        "FLOAT": "a number",
        "STRING": "a string",
        "$END": "end of file",
        "COMPARE": "a comparison",
    }
    if name in named:
        return named[name]
    for term in parser().terminals:
        if term.name == name and term.pattern.type == "str":
            return f"'{term.pattern.value}'"
    return name.lower()


def _one_of(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "one of " + ", ".join(items)


@v_args(meta=True)
class _ToAst(Transformer):
    """Parse tree -> ast dataclasses. Every node gets the span of its rule."""

    def __init__(self, path: str, source: str) -> None:
        super().__init__()
        self.path = path
        self.source = source

    def _span(self, meta) -> Span:
        return Span(self.path, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok(self, tok: Token) -> Span:
        # tokens from the lexer always carry their positions
        assert tok.line is not None and tok.column is not None
        assert tok.end_line is not None and tok.end_column is not None
        return Span(self.path, tok.line, tok.column, tok.end_line, tok.end_column)

    # ---- file structure
    def start(self, meta, items):
        consts = tuple(i for i in items if isinstance(i, ast.Assign))
        defs = tuple(i for i in items if isinstance(i, ast.Definition))
        trains = tuple(i for i in items if isinstance(i, ast.TrainDef))
        imports = tuple(i for i in items if isinstance(i, ast.Import))
        derived = tuple(i for i in items if isinstance(i, ast.DerivedModel))
        return ast.Program(self.path, self.source, consts, defs, trains, imports, derived=derived)

    def import_decl(self, meta, c):
        if len(c) == 1 and c[0].type == "STRING":
            return ast.Import(self._span(meta), str(c[0])[1:-1], library=False)
        return ast.Import(self._span(meta), ".".join(str(n) for n in c), library=True)

    def model(self, meta, c):
        return ast.Definition(self._span(meta), "model", str(c[0]), c[1] or (), tuple(c[2:]))

    def derived_model(self, meta, c):
        args, kwargs = c[2] or ((), ())
        return ast.DerivedModel(
            self._span(meta), str(c[0]), str(c[1]), self._tok(c[1]), args, kwargs
        )

    def block(self, meta, c):
        return ast.Definition(self._span(meta), "block", str(c[0]), c[1] or (), tuple(c[2:]))

    def train(self, meta, c):
        return ast.TrainDef(self._span(meta), tuple(c))

    def params(self, meta, c):
        return tuple(p for p in c if p is not None)

    def param(self, meta, c):
        return ast.Param(self._span(meta), str(c[0]), str(c[1]), c[2])

    # ---- statements
    def input_decl(self, meta, c):
        return ast.InputDecl(self._span(meta), str(c[0]), c[1])

    def target_decl(self, meta, c):
        return ast.TargetDecl(self._span(meta), str(c[0]), c[1])

    def output_decl(self, meta, c):
        return ast.OutputDecl(self._span(meta), str(c[0]), c[1])

    def train_output_decl(self, meta, c):
        return ast.OutputDecl(self._span(meta), str(c[0]), c[1], training=True)

    def assign(self, meta, c):
        return ast.Assign(self._span(meta), tuple(str(n) for n in c[:-1]), c[-1])

    def tensor_type(self, meta, c):
        dims = tuple(d for d in c[1:] if d is not None)
        return ast.TensorTypeExpr(self._span(meta), str(c[0]), dims)

    # ---- expressions
    def int(self, meta, c):
        # The digit count first: int() of a 5000-digit literal hits Python's conversion limit.
        digits = str(c[0]).lstrip("0")
        if len(digits) > _INT_MAX_DIGITS or int(digits or "0") > MAX_INT:
            shown = str(c[0]) if len(c[0]) <= 30 else f"of {len(c[0]):,} digits"
            raise SpecError(
                f"integer literal {shown} is too large: the largest is 2**63 - 1 = {MAX_INT}",
                "sizes and attributes are 64-bit integers",
                self._span(meta),
            )
        return ast.Literal(self._span(meta), int(digits or "0"))

    def float(self, meta, c):
        value = float(c[0])
        if value == float("inf"):  # a literal has no sign: `-1e400` is neg(1e400)
            raise SpecError(
                f"number literal {str(c[0])[:40]} is beyond float64's range (about 1.8e308)",
                span=self._span(meta),
            )
        return ast.Literal(self._span(meta), value)

    def string(self, meta, c):
        return ast.Literal(self._span(meta), str(c[0])[1:-1])

    def true(self, meta, c):
        return ast.Literal(self._span(meta), True)

    def false(self, meta, c):
        return ast.Literal(self._span(meta), False)

    def ref(self, meta, c):
        return ast.Ref(self._span(meta), str(c[0]))

    def list(self, meta, c):
        return ast.ListExpr(self._span(meta), tuple(i for i in c if i is not None))

    def index(self, meta, c):
        return ast.Index(self._span(meta), c[0], tuple(i for i in c[1:] if i is not None))

    def slice(self, meta, c):
        return ast.Slice(self._span(meta), c[0], c[1], c[2] if len(c) > 2 else None)

    def ellipsis(self, meta, c):
        return ast.Ellipsis_(self._span(meta))

    def call(self, meta, c):
        args, kwargs = c[1] or ((), ())
        return ast.Call(self._span(meta), str(c[0]), self._tok(c[0]), args, kwargs)

    def args(self, meta, c):
        return tuple(a for a in c if not isinstance(a, ast.Kwarg)), tuple(
            a for a in c if isinstance(a, ast.Kwarg)
        )

    def kwarg(self, meta, c):
        return ast.Kwarg(self._span(meta), str(c[0]), c[1])

    @staticmethod
    def _binop(op: str):  # a factory used in the class body
        def build(self, meta, c):
            return ast.BinOp(self._span(meta), op, c[0], c[1])

        return build

    add, sub, mul, div = _binop("+"), _binop("-"), _binop("*"), _binop("/")

    def compare(self, meta, c):
        return ast.Compare(self._span(meta), str(c[1]), c[0], c[2])

    def or_op(self, meta, c):
        return ast.Logic(self._span(meta), "or", c[0], c[1])

    def and_op(self, meta, c):
        return ast.Logic(self._span(meta), "and", c[0], c[1])

    def not_op(self, meta, c):
        return ast.Logic(self._span(meta), "not", c[0], None)

    def if_else(self, meta, c):
        return ast.IfElse(self._span(meta), c[0], c[1], c[2])

    def neg(self, meta, c):
        return ast.Neg(self._span(meta), c[0])

    def pipe(self, meta, c):
        return ast.Pipe(self._span(meta), c[0], c[1])

    # ---- stages
    def stage_ref(self, meta, c):
        return ast.StageCall(self._span(meta), str(c[0]), (), ())

    def stage_call(self, meta, c):
        args, kwargs = c[1] or ((), ())
        return ast.StageCall(self._span(meta), str(c[0]), args, kwargs)

    def stage_seq(self, meta, c):
        return ast.StageSeq(self._span(meta), tuple(c))

    def stage_repeat(self, meta, c):
        return ast.StageRepeat(self._span(meta), c[0], c[1])

    def stage_named(self, meta, c):
        return ast.StageNamed(self._span(meta), c[0], str(c[1]), self._tok(c[1]))
