"""The AST of a .dl file: frozen dataclasses, one per grammar rule, each with its source span."""

from __future__ import annotations

from dataclasses import dataclass, field

from dslc.diagnostics import Span

# ---- expressions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    span: Span


@dataclass(frozen=True)
class Literal(Expr):
    value: int | float | str | bool


@dataclass(frozen=True)
class Ref(Expr):
    name: str


@dataclass(frozen=True)
class ListExpr(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Kwarg:
    span: Span
    name: str
    value: Expr


@dataclass(frozen=True)
class Call(Expr):
    """`name(args)`: a layer, block, loss or optimizer applied to arguments."""

    name: str
    name_span: Span
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]


@dataclass(frozen=True)
class BinOp(Expr):
    op: str  # one of + - * /
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Neg(Expr):
    operand: Expr


@dataclass(frozen=True)
class Compare(Expr):
    op: str  # == != < > <= >=
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Logic(Expr):
    op: str  # "and" | "or" | "not" (not has no right operand)
    left: Expr
    right: Expr | None


@dataclass(frozen=True)
class IfElse(Expr):
    """`a if cond else b`: the condition is a compile-time bool; only the taken side is built."""

    then: Expr
    cond: Expr
    other: Expr


@dataclass(frozen=True)
class Slice:
    """`start:stop:step` in a subscript; an omitted part is None."""

    span: Span
    start: Expr | None
    stop: Expr | None
    step: Expr | None


@dataclass(frozen=True)
class Ellipsis_:
    """`...` in a subscript: as many whole dims as the others leave."""

    span: Span


Subscript = Expr | Slice | Ellipsis_


@dataclass(frozen=True)
class Index(Expr):
    """`base[i, a:b, ...]`: elements of a tensor (a slice, an index) or of a compile-time list."""

    base: Expr
    items: tuple[Subscript, ...]


@dataclass(frozen=True)
class Pipe(Expr):
    """`source -> stage`: the source becomes the stage's first input."""

    source: Expr
    stage: Stage


# ---- pipeline stages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    span: Span


@dataclass(frozen=True)
class StageCall(Stage):
    """`-> relu` (bare, no arguments) or `-> conv2d(6, kernel=5)`."""

    name: str
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]


@dataclass(frozen=True)
class StageSeq(Stage):
    """`-> (conv2d(64, 3) -> relu)`: several stages as one, usually to repeat them."""

    stages: tuple[Stage, ...]


@dataclass(frozen=True)
class StageRepeat(Stage):
    """`-> stage * n`: n copies of the stage in a row, each with its own parameters."""

    stage: Stage
    count: Expr


@dataclass(frozen=True)
class StageNamed(Stage):
    """`-> stage as name`: the name the stage's module takes in the generated PyTorch (and so in
    the state_dict): a layer's attribute, a block instance, an nn.Sequential of a parenthesized
    sequence, or the container of a repetition."""

    stage: Stage
    name: str
    name_span: Span


# ---- declarations and statements ---------------------------------------------------------------


@dataclass(frozen=True)
class TensorTypeExpr:
    span: Span
    dtype: str
    dims: tuple[Expr, ...]


@dataclass(frozen=True)
class Param:
    span: Span
    name: str
    type: str
    default: Expr | None


@dataclass(frozen=True)
class InputDecl:
    span: Span
    name: str
    type: TensorTypeExpr | None


@dataclass(frozen=True)
class TargetDecl:
    span: Span
    name: str
    type: TensorTypeExpr


@dataclass(frozen=True)
class OutputDecl:
    span: Span
    name: str
    value: Expr | None
    training: bool = False  # `train output`: for the train section's loss, not for inference


@dataclass(frozen=True)
class Assign:
    span: Span
    names: tuple[str, ...]
    value: Expr


Stmt = InputDecl | TargetDecl | OutputDecl | Assign


@dataclass(frozen=True)
class Definition:
    """A `model` or a `block`: the same body language; a model is the entry point."""

    span: Span
    kind: str  # "model" | "block"
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class DerivedModel:
    """`model Finetune = DigitsResNet(classes=4)`: the model `target` of an imported file under
    the name `name`, the arguments the new defaults of its parameters (frontend/derive.py
    makes it a Definition when the imports are resolved)."""

    span: Span
    name: str
    target: str
    target_span: Span
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]


@dataclass(frozen=True)
class TrainDef:
    span: Span
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Import:
    """`import "other.dl"` (a file: `library` false, `target` the path as written) or
    `import std.vision` (`library` true, `target` the dotted name)."""

    span: Span
    target: str
    library: bool


@dataclass(frozen=True)
class Program:
    """A file. After frontend/imports, also the blocks and constants of every file it imports
    (first, in the order they were loaded) and each imported file's text by its path; its
    derived model is then one of its definitions."""

    path: str
    source: str
    constants: tuple[Assign, ...]
    definitions: tuple[Definition, ...]
    trains: tuple[TrainDef, ...]
    imports: tuple[Import, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)
    derived: tuple[DerivedModel, ...] = ()  # a Definition each after frontend/imports

    def source_of(self, path: str) -> str:
        """The text of the file a span points into: this file's or an imported one's."""
        return self.sources.get(path, self.source)
