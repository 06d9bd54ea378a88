"""Lowering: AST -> IR graph. Evaluates compile-time values (block parameters, `width * 4`),
expands blocks and repetition, names every node and value, and runs each op's shape rule
from the registry, so that every type in the graph is known before any backend runs.

Errors are collected per statement: a failed statement poisons the names it defines, and any
later statement using them is skipped silently, so one mistake is reported once."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from dslc.diagnostics import Diagnostics, Span, SpecError
from dslc.frontend import ast
from dslc.ir import structure as st
from dslc.ir.graph import Graph, Node, ParamSpec, Value
from dslc.ir.limits import MAX_ATTR_INT, Budget, check_type
from dslc.ir.types import DTYPES, Sym, TensorType, name_data_dims
from dslc.lower import codes
from dslc.lower.binding import Arg, bind
from dslc.lower.blocks import Blocks
from dslc.lower.names import key as site_key
from dslc.lower.names import site_names
from dslc.lower.scope import POISON, Frame, Poisoned, Scope
from dslc.names import Namespace
from dslc.ops import LAYER_FAMILIES
from dslc.ops.base import REGISTRY, OpDef, describe, suggest
from dslc.ops.init import values_shape

DTYPE_ALIASES = {
    "float": "f32",
    "float32": "f32",
    "double": "f64",
    "float64": "f64",
    "half": "f16",
    "float16": "f16",
    "int": "i64",
    "long": "i64",
    "int64": "i64",
    "int32": "i32",
}


class Elaborator(Blocks):
    def __init__(self, program: ast.Program, diags: Diagnostics) -> None:
        self.program = program
        self.diags = diags
        self.nodes: list[Node] = []
        self.instances: dict[str, str] = {}  # block instance path -> block name
        self.value_names = Namespace()  # the IR's value names
        self.blocks: dict[str, ast.Definition] = {}
        self.active: list[str] = []  # blocks being expanded, to catch recursion
        self.globals = Scope()
        self.sites: dict[str, Any] = {}  # block name -> its static layer names
        self.hint = ""  # the name the current statement defines
        self.budget = Budget()  # dslc.ir.limits: nodes and parameters so far

    # ---- diagnostics
    def report(self, err: SpecError, span: Span, frame: Frame | None = None) -> None:
        where = err.span or span
        note = frame.note(where.path) if frame else None
        hint = "; ".join(h for h in (err.hint, note) if h) or None
        if not self.diags.seen(where, err.message):
            self.diags.error(where, err.message, hint)

    def fresh(self, base: str) -> str:
        return self.value_names.create(base)

    # ---- the file
    def run(self, overrides: dict[str, Any]) -> tuple[Graph | None, Scope | None]:
        models = [d for d in self.program.definitions if d.kind == "model"]
        self.collect_blocks()
        for c in self.program.constants:
            self.statement(c, self.globals, Frame(), None, {})
        if len(models) != 1:
            span = models[1].span if models else Span.start_of(self.program.path)
            msg = "a spec holds exactly one model" if models else "the file defines no model"
            self.diags.error(
                span, msg, "write `model Name { input x: f32[N, 4] ... }`" if not models else None
            )
            return None, None
        model = models[0]  # its Python class name is the backend's to make legal
        scope = Scope(self.globals)
        try:
            self.bind_params(model, [], dict(overrides), scope, model.span, overrides_given=True)
            sites = site_names(model.body, set(self.blocks))
        except SpecError as err:
            self.report(err, model.span)
            return None, None
        scope.codes = {
            k: code for k, v in scope.vars.items() if (code := codes.constant(v)) is not None
        }
        root = self.instance(model, "", scope, {})
        graph = Graph(model.name, self.program.path, [], {}, self.nodes, blocks=self.instances)
        graph.root = root
        outputs = self.body(model, Frame(sites=sites, items=root.items), scope, None, graph)
        graph.outputs = {k: v for k, v in outputs.items() if isinstance(v, Value)}
        training = [s.name for s in model.body if isinstance(s, ast.OutputDecl) and s.training]
        graph.outputs = {  # the outputs for inference first, as forward returns them
            **{k: v for k, v in graph.outputs.items() if k not in training},
            **{k: v for k, v in graph.outputs.items() if k in training},
        }
        graph.train_outputs = tuple(k for k in graph.outputs if k in training)
        root.inputs, root.outputs = list(graph.inputs), list(graph.outputs.values())
        root.input_names = [v.name for v in graph.inputs]
        root.output_names = list(graph.outputs)
        if not outputs and not self.diags.has_errors:
            self.diags.error(
                model.span, f"model {model.name} declares no output", "add `output name`"
            )
        return graph, scope

    # ---- statements
    def body(
        self,
        d: ast.Definition,
        frame: Frame,
        scope: Scope,
        ins: list[Value] | None,
        graph: Graph | None,
    ) -> dict[str, Value | Any]:
        outputs: dict[str, Any] = {}
        pending = list(ins or [])
        for stmt in d.body:
            self.statement(stmt, scope, frame, pending if ins is not None else graph, outputs)
        return outputs

    def statement(
        self, stmt: ast.Stmt, scope: Scope, frame: Frame, inputs: Any, outputs: dict
    ) -> None:
        start = len(self.nodes)
        names = stmt.names if isinstance(stmt, ast.Assign) else (getattr(stmt, "name", ""),)
        self.hint = names[0]
        try:
            match stmt:
                case ast.InputDecl():
                    self.input_decl(stmt, scope, frame, inputs)
                case ast.TargetDecl():
                    raise SpecError("targets are declared in the train section", span=stmt.span)
                case ast.Assign():
                    self.assign(
                        stmt.names, self.eval(stmt.value, scope, frame), stmt, scope, frame, start
                    )
                case ast.OutputDecl():
                    self.output(stmt, scope, frame, outputs, start)
        except SpecError as err:
            self.report(err, stmt.span, frame)
            self.poison(stmt, scope, outputs)
        except Poisoned:
            self.poison(stmt, scope, outputs)

    def poison(self, stmt: ast.Stmt, scope: Scope, outputs: dict) -> None:
        names = stmt.names if isinstance(stmt, ast.Assign) else (stmt.name,)
        for n in names:
            scope.vars.setdefault(n, POISON)
            scope.spans.setdefault(n, stmt.span)
        if isinstance(stmt, ast.OutputDecl):
            outputs.setdefault(stmt.name, POISON)

    def input_decl(self, stmt: ast.InputDecl, scope: Scope, frame: Frame, inputs: Any) -> None:
        if isinstance(inputs, list):  # a block's input: take the next tensor of the call
            value = inputs.pop(0)
            if stmt.type is not None:
                self.check_type(value, self.tensor_type(stmt.type, scope), stmt.span)
        else:
            if stmt.type is None:
                raise SpecError(
                    f"model input '{stmt.name}' needs a type",
                    "e.g. `input x: f32[N, 4]`",
                    stmt.span,
                )
            value = Value(
                self.fresh(stmt.name), self.tensor_type(stmt.type, scope), user_named=True
            )
            inputs.inputs.append(value)
        scope.define(stmt.name, value, stmt.span)

    def check_type(self, value: Value, want: TensorType, span: Span) -> None:
        t = value.type
        ok = (
            t.dtype == want.dtype
            and t.rank == want.rank
            and all(w == g or isinstance(w, Sym) for w, g in zip(want.shape, t.shape, strict=True))
        )
        if not ok:
            raise SpecError(f"this block input expects {want}, got {t}", span=span)

    def assign(
        self,
        names: tuple[str, ...],
        value: Any,
        stmt: ast.Assign,
        scope: Scope,
        frame: Frame,
        start: int,
    ) -> None:
        values = self.unpack(value, len(names))
        if len(values) != len(names):
            raise SpecError(
                f"{len(names)} names on the left but the right side gives {len(values)} value(s)"
            )
        for name, v in zip(names, values, strict=True):
            self.name_value(v, frame.path + name, start)
            if len(names) > 1 and isinstance(v, Value):  # a block's outputs: the caller's names
                v.hint = name
            scope.define(name, v, stmt.span)
            if len(names) == 1 and not isinstance(v, Value | tuple | list):
                code = codes.translate(stmt.value, scope.all_codes(), v)
                if code is not None:
                    scope.codes[name] = code

    def unpack(self, value: Any, count: int) -> list[Any]:
        """The values `a, b = ...` names: a block's outputs, or those of an op whose call
        stands for its first output (OpDef.leading_output), as many as the names."""
        if count == 1:
            return [value]
        if isinstance(value, tuple):
            return list(value)
        maker = next((n for n in reversed(self.nodes) if n.outputs[0] is value), None)
        if maker is not None and maker.op.leading_output:
            return maker.outputs[:count]
        return [value]

    def name_value(self, v: Any, name: str, start: int) -> None:
        """Give a tensor made by this statement the name the spec gives it."""
        made_here = any(v is out for n in self.nodes[start:] for out in n.outputs)
        if isinstance(v, Value) and made_here and not v.user_named:
            self.value_names.release(v.name)
            v.name, v.user_named = self.fresh(name), True
            v.hint = name.rsplit(".", 1)[-1]

    def output(
        self, stmt: ast.OutputDecl, scope: Scope, frame: Frame, outputs: dict, start: int
    ) -> None:
        if stmt.training and frame.path:
            raise SpecError(
                "`train output` belongs in the model: a block's outputs are its caller's",
                hint="make it a plain `output`, and declare `train output` in the model",
            )
        if stmt.value is not None:
            value = self.eval(stmt.value, scope, frame)
            self.name_value(value, frame.path + stmt.name, start)
            scope.define(stmt.name, value, stmt.span)
        else:
            value = scope.lookup(stmt.name, stmt.span)
        if not isinstance(value, Value):
            hint = (
                "unpack the block's outputs first: `a, b = ...`"
                if isinstance(value, tuple)
                else None
            )
            raise SpecError(f"output '{stmt.name}' must be a tensor, got {describe(value)}", hint)
        if stmt.name in outputs:
            raise SpecError(f"output '{stmt.name}' is declared twice")
        outputs[stmt.name] = value

    def tensor_type(self, t: ast.TensorTypeExpr, scope: Scope) -> TensorType:
        if t.dtype not in DTYPES:
            alias = DTYPE_ALIASES.get(t.dtype)
            hint = f"did you mean '{alias}'?" if alias else suggest(t.dtype, list(DTYPES))
            raise SpecError(
                f"unknown dtype '{t.dtype}'", hint or f"one of {', '.join(DTYPES)}", t.span
            )
        dims = []
        for e in t.dims:
            if isinstance(e, ast.Ref) and e.name not in scope.names():
                scope.vars[e.name] = Sym.name(e.name)  # a symbolic dim, usable later (reshape)
                scope.spans[e.name] = e.span
            d = self.eval(e, scope, Frame())
            positive_sym = isinstance(d, Sym) and d.text is None and all(c > 0 for _, c in d.terms)
            if not (
                positive_sym
                or (isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_ATTR_INT)
            ):
                raise SpecError(
                    f"a dim must be a positive integer or a symbol, got {describe(d)}", span=e.span
                )
            dims.append(d)
        return check_type(TensorType(t.dtype, tuple(dims)), t.span)

    # ---- calls
    def call(
        self,
        name: str,
        name_span: Span,
        span: Span,
        args: list[Arg],
        kwargs: dict[str, Arg],
        piped: Arg | None,
        frame: Frame,
    ) -> Any:
        if piped is not None:
            takes_list = name in REGISTRY and REGISTRY[name].inputs == ("*xs",)
            if isinstance(piped.value, list) and not takes_list and not self.takes_several(name):
                raise SpecError(
                    f"a list of {len(piped.value)} is piped into {name}, which takes one tensor",
                    hint="a list goes into concat: `[a, b] -> concat(axis=1)`",
                    span=span,
                )
            spread = (
                isinstance(piped.value, tuple)
                or isinstance(piped.value, list)
                and self.takes_several(name)
            )
            args = [Arg(v, piped.span) for v in piped.value] + args if spread else [piped, *args]
        if name in self.blocks:
            return self.call_block(self.blocks[name], span, args, kwargs, frame)
        op = REGISTRY.get(name)
        if op is None:
            candidates = list(self.blocks) + [
                k for k, o in REGISTRY.items() if o.family in LAYER_FAMILIES
            ]
            raise SpecError(
                f"unknown layer or block '{name}'", suggest(name, candidates), name_span
            )
        if op.family not in LAYER_FAMILIES:
            raise SpecError(
                f"'{name}' is {'a loss' if op.family == 'loss' else 'an optimizer'}; it belongs "
                f"in the train section (`{op.example}`)",
                span=name_span,
            )
        lead = next((i for i, a in enumerate(args) if not isinstance(a.value, Value)), len(args))
        given = attr_codes(op, args[lead:], kwargs)
        tensors, attrs = bind(op, list(args), kwargs, span)
        return self.apply(op, tensors, attrs, span, frame, site=site_key(span), given=given)

    def takes_several(self, name: str) -> bool:
        if name in self.blocks:
            return sum(isinstance(s, ast.InputDecl) for s in self.blocks[name].body) > 1
        op = REGISTRY.get(name)
        return op is not None and len(op.inputs) > 1

    def apply(
        self,
        op: OpDef,
        tensors: list[Value],
        attrs: dict,
        span: Span,
        frame: Frame,
        site: tuple | None = None,
        given: dict | None = None,
    ) -> Value | tuple:
        in_types = [t.type for t in tensors]
        try:
            attrs = op.resolve(in_types, attrs)
            out = op.infer(in_types, attrs)
            attrs = self.tie(op, in_types, attrs)
            params = op.params(in_types, attrs)
        except SpecError as err:
            raise SpecError(err.message, err.hint, err.span or span) from None
        outs = out if isinstance(out, list) else [out]
        if op.leading_output and frame.seq is not None:
            raise SpecError(
                f"{op.name} gives {len(outs)} tensors, so it cannot stand in a named sequence or "
                "a repeated group of layers (an nn.Sequential passes one tensor on)",
                hint=f"apply the {op.name} outside the parentheses, or repeat it alone",
                span=span,
            )
        params = {k: _given(op, k, p, attrs, span) for k, p in params.items()}
        self.budget.node(op, in_types, outs, attrs, params, span, Poisoned)
        named = site is not None and site in frame.sites.names
        as_module = not op.module and (named or frame.seq is not None)
        if op.module or as_module:
            name = frame.module_name(site, op.node_prefix)
        else:
            name = frame.name(op.node_prefix)
        outs = [name_data_dims(t, name) for t in outs]
        values = [
            Value(self.fresh(name if len(outs) == 1 else f"{name}_{i}"), t, hint=self.hint)
            for i, t in enumerate(outs)
        ]
        node = Node(op, name, tensors, attrs, values, span, params, codes=given or {})
        if as_module and op.torch_layer(node) is None:
            raise SpecError(
                f"{op.name} has no nn.Module form, so it cannot be named or stand in a named "
                "sequence",
                hint="name the layers around it, or leave the sequence unnamed",
            )
        self.nodes.append(node)
        if frame.items is not None:
            frame.items.append(st.OpItem(node, as_module))
        return values[0] if len(values) == 1 or op.leading_output else tuple(values)

    def tie(self, op: OpDef, in_types: list[TensorType], attrs: dict) -> dict:
        """Weight tying (`linear(V, tie=emb)`): check the layer that made the tensor holds the
        shared parameter, of the shape this op would give its own, and refer to it by key."""
        for attr, key in op.ties.items():
            v = attrs.get(attr)
            if not isinstance(v, Value):
                continue
            owner = next((n for n in self.nodes if any(o is v for o in n.outputs)), None)
            if owner is None or key not in owner.params:
                source = f"{owner.op.name} ({owner.name})" if owner else "no layer"
                raise SpecError(
                    f"{op.name}: {attr}={v.name} must be made by a layer that holds a {key}, "
                    f"but {v.name} comes from {source}",
                    hint="tie to the output of an embedding: `linear(V, bias=false, tie=emb)`",
                )
            mine = op.params(in_types, {**attrs, attr: None})[key].shape
            theirs = owner.params[key].shape
            if mine != theirs:
                raise SpecError(
                    f"{op.name}: cannot share {owner.name}.{key} {list(theirs)}: this layer's "
                    f"{key} is {list(mine)}",
                    hint="an output head tied to an embedding (V, D) maps width D to V outputs",
                )
            attrs = {**attrs, attr: f"{owner.name}.{key}"}
        return attrs


def _given(op: OpDef, key: str, p: ParamSpec, attrs: dict, span: Span) -> ParamSpec:
    """Apply what the spec says of a parameter beyond its op's rule: values written in the spec
    must broadcast to its shape, and trainable=false freezes it."""
    if p.init.kind == "values":
        _check_values(op, key, p, span)
    if attrs.get("trainable") is False and not p.buffer:
        return replace(p, trainable=False)
    return p


def _check_values(op: OpDef, key: str, p: ParamSpec, span: Span) -> None:
    assert p.init.values is not None
    key = key or "it"  # a learned tensor's own parameter
    try:
        shape = values_shape(p.init.values)
    except ValueError:
        raise SpecError(
            f"{op.name}: the values given for {key} have rows of different lengths", span=span
        ) from None
    try:
        fits = np.broadcast_shapes(shape, p.shape) == p.shape
    except ValueError:
        fits = False
    if not fits:
        raise SpecError(
            f"{op.name}: the values given for {key} have shape {list(shape)}, which does not "
            f"fit its shape {list(p.shape)}",
            hint="give a nested list of that shape, or one that broadcasts to it",
            span=span,
        )


def attr_codes(op: OpDef, args: list[Arg], kwargs: dict[str, Arg]) -> dict[str, tuple]:
    """attribute -> (the call site's Python source, the value given) for the attributes the
    call gives; the PyTorch backend may write the source instead of the value."""
    out = {a.name: (arg.code, arg.value) for a, arg in zip(op.attrs, args, strict=False)}
    out |= {k: (arg.code, arg.value) for k, arg in kwargs.items()}
    return {k: (codes.source(c), v) for k, (c, v) in out.items() if c is not None}
