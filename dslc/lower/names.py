"""The names a definition's layers take, decided from its text before anything is evaluated.

A layer's name is its attribute in the generated PyTorch module and the prefix of its
parameters in the state_dict, so it must not depend on which branch of a condition an instance
takes or on how often a block is repeated: every module site of a model or block body (a layer
that holds parameters or state, a block call, a repetition, a named sequence) gets its name
here, in evaluation order. The spec names a site with `as name`; the others are numbered per
prefix (conv1, conv2, bn1, basic_block1; a repetition of one kind of layer is `convs`,
`blocks`, otherwise `layers`), skipping the names the spec took.

The rules that keep a user's name from breaking the generated module live here too: a name the
spec gives a layer may not be a Python keyword or an attribute nn.Module already has."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field

from dslc.diagnostics import Span, SpecError
from dslc.frontend import ast
from dslc.ops.base import REGISTRY

# Attributes every nn.Module has (torch 2.x, `dir(nn.Module())`, public and the private ones a
# subclass would clobber): a layer named like one would replace a method or break loading.
MODULE_ATTRIBUTES = frozenset(
    """T_destination add_module apply bfloat16 buffers call_super_init children compile cpu
    cuda double dump_patches eval extra_repr float forward get_buffer get_extra_state
    get_parameter get_submodule half ipu load_state_dict modules mtia named_buffers
    named_children named_modules named_parameters parameters register_backward_hook
    register_buffer register_forward_hook register_forward_pre_hook
    register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook
    register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_
    set_extra_state set_submodule share_memory smart_apply state_dict to to_empty train
    training type xpu zero_grad""".split()
)

Key = tuple[int, int, int, int]


def key(span: Span) -> Key:
    """A call site, by its place in the file."""
    return (span.line, span.column, span.end_line, span.end_column)


def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def check_layer_name(name: str, span: Span) -> None:
    if keyword.iskeyword(name) or keyword.issoftkeyword(name) and name == "_":
        raise SpecError(
            f"a layer cannot be named '{name}': it is a Python keyword",
            "the name is an attribute of the generated module; choose another",
            span,
        )
    if name in MODULE_ATTRIBUTES or name.startswith("__"):
        raise SpecError(
            f"a layer cannot be named '{name}': every nn.Module has an attribute of that name",
            "the name is an attribute of the generated module; choose another, such as "
            f"'{name}_layer'",
            span,
        )


@dataclass
class Numbering:
    """Names numbered per prefix (conv1, conv2; fc1_1 after a prefix ending in a digit),
    skipping the names already taken here or in `others`."""

    taken: set[str] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=dict)

    def next(self, prefix: str, others: set[str] | frozenset[str] = frozenset()) -> str:
        sep = "_" if prefix[-1].isdigit() else ""
        while True:
            self.counters[prefix] = self.counters.get(prefix, 0) + 1
            name = f"{prefix}{sep}{self.counters[prefix]}"
            if name not in self.taken and name not in others:
                self.taken.add(name)
                return name


@dataclass
class Sites:
    """The static names of one definition's module sites: call-site key -> name."""

    names: dict[Key, str] = field(default_factory=dict)
    numbering: Numbering = field(default_factory=Numbering)

    @property
    def taken(self) -> set[str]:
        return self.numbering.taken

    def auto(self, prefix: str) -> str:
        return self.numbering.next(prefix)

    def plural(self, prefix: str) -> str:
        name, k = f"{prefix}s", 1
        while name in self.taken:
            k += 1
            name = f"{prefix}s{k}"
        self.taken.add(name)
        return name


def site_names(body: tuple[ast.Stmt, ...], blocks: set[str]) -> Sites:
    """Name every module site of a definition body (see the module docstring)."""
    sites = Sites()
    walker = _Walker(sites, blocks)
    walker.collect_user_names(body)
    for stmt in body:  # `gamma = parameter(...)`: the tensor takes the assignment's name
        value = getattr(stmt, "value", None)
        if isinstance(stmt, ast.Assign) and len(stmt.names) == 1 and isinstance(value, ast.Call):
            op = REGISTRY.get(value.name)
            if op is not None and op.named_by_target and stmt.names[0] not in sites.taken:
                check_layer_name(stmt.names[0], stmt.span)
                sites.names[key(value.span)] = stmt.names[0]
                sites.taken.add(stmt.names[0])
    for stmt in body:
        if isinstance(stmt, ast.Assign | ast.OutputDecl) and stmt.value is not None:
            walker.expr(stmt.value)
    return sites


@dataclass
class _Walker:
    sites: Sites
    blocks: set[str]

    def collect_user_names(self, body: tuple[ast.Stmt, ...]) -> None:
        """User names first, so that numbering skips them; a name used twice is an error."""
        seen: dict[str, Span] = {}
        for node in _all_named(body):
            check_layer_name(node.name, node.name_span)
            if node.name in seen:
                raise SpecError(
                    f"'{node.name}' names two layers (first at line {seen[node.name].line})",
                    "each layer of a model or block has its own name",
                    node.name_span,
                )
            seen[node.name] = node.name_span
        self.sites.taken.update(seen)

    def prefix(self, name: str) -> str | None:
        """The numbering prefix of a call of `name`, if it is a module site."""
        if name in self.blocks:
            return snake(name)
        op = REGISTRY.get(name)
        return op.node_prefix if op is not None and op.module else None

    def expr(self, e: ast.Expr) -> None:
        match e:
            case ast.ListExpr():
                for item in e.items:
                    self.expr(item)
            case ast.Neg():
                self.expr(e.operand)
            case ast.BinOp() | ast.Compare():
                self.expr(e.left)
                self.expr(e.right)
            case ast.Logic():
                self.expr(e.left)
                if e.right is not None:
                    self.expr(e.right)
            case ast.IfElse():
                self.expr(e.cond)
                self.expr(e.then)
                self.expr(e.other)
            case ast.Call():
                self.arguments(e.args, e.kwargs)
                self.site(e.span, e.name, None)
            case ast.Pipe():
                self.expr(e.source)
                self.stage(e.stage, None)

    def arguments(self, args: tuple[ast.Expr, ...], kwargs: tuple[ast.Kwarg, ...]) -> None:
        for a in args:
            self.expr(a)
        for kw in kwargs:
            self.expr(kw.value)

    def site(self, span: Span, name: str, given: str | None) -> None:
        prefix = self.prefix(name)
        if key(span) in self.sites.names:  # named already (by its assignment)
            return
        if given is not None:
            self.sites.names[key(span)] = given
        elif prefix is not None:
            self.sites.names[key(span)] = self.sites.auto(prefix)

    def stage(self, st: ast.Stage, given: str | None) -> None:
        match st:
            case ast.StageCall():
                self.arguments(st.args, st.kwargs)
                self.site(st.span, st.name, given)
            case ast.StageNamed():
                self.stage(st.stage, st.name)
            case ast.StageSeq() if len(st.stages) == 1:
                self.stage(st.stages[0], given)
            case ast.StageSeq():
                if given is not None:  # a named sequence: its stages are numbered inside it
                    self.sites.names[key(st.span)] = given
                    return
                for inner in st.stages:
                    self.stage(inner, None)
            case ast.StageRepeat():
                self.expr(st.count)
                self.sites.names[key(st.span)] = given or self.container(st.stage)

    def container(self, body: ast.Stage) -> str:
        calls = list(_calls(body))
        prefixes = {p for p in map(self.prefix, calls) if p is not None}
        modules = [c for c in calls if self.prefix(c) is not None]
        if len(modules) == 1:
            return self.sites.plural(prefixes.pop())
        return self.sites.plural("layer")


def _calls(st: ast.Stage):
    """The names called by the stages of a repetition's body."""
    match st:
        case ast.StageCall():
            yield st.name
        case ast.StageNamed():
            yield from _calls(st.stage)
        case ast.StageSeq():
            for inner in st.stages:
                yield from _calls(inner)
        case ast.StageRepeat():
            yield from _calls(st.stage)


def module_sites(st: ast.Stage, blocks: set[str]) -> int:
    """How many module sites a repetition's body holds."""
    walker = _Walker(Sites(), blocks)
    return sum(walker.prefix(c) is not None for c in _calls(st))


def _all_named(body: tuple[ast.Stmt, ...]):
    """Every `as name` of a body, outside repetitions and named sequences (whose stages are
    numbered)."""
    for stmt in body:
        value = getattr(stmt, "value", None)
        if isinstance(value, ast.Expr):
            yield from _named_in(value)


def _named_in(e: ast.Expr):
    for child in _children(e):
        if isinstance(child, ast.StageNamed):
            yield child
            if not isinstance(child.stage, ast.StageSeq | ast.StageRepeat):
                continue
            if isinstance(child.stage, ast.StageSeq) and len(child.stage.stages) == 1:
                yield from _named_in_stage(child.stage.stages[0])
            continue
        if isinstance(child, ast.StageRepeat):
            continue
        if isinstance(child, ast.Expr):
            yield from _named_in(child)
        else:
            yield from _named_in_stage(child)


def _named_in_stage(st):
    if isinstance(st, ast.StageNamed):
        yield st
        return
    if isinstance(st, ast.StageSeq):
        for inner in st.stages:
            yield from _named_in_stage(inner)


def _children(e):
    match e:
        case ast.ListExpr():
            return list(e.items)
        case ast.Neg():
            return [e.operand]
        case ast.BinOp() | ast.Compare():
            return [e.left, e.right]
        case ast.Logic():
            return [e.left] + ([e.right] if e.right is not None else [])
        case ast.IfElse():
            return [e.cond, e.then, e.other]
        case ast.Call():
            return [*e.args, *(kw.value for kw in e.kwargs)]
        case ast.Pipe():
            return [e.source, e.stage]
        case ast.StageCall():
            return [*e.args, *(kw.value for kw in e.kwargs)]
        case ast.StageSeq():
            return list(e.stages)
    return []
