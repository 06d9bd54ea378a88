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
from dslc.ir.types import DTYPES, Sym, TensorType
from dslc.lower import codes
from dslc.lower.binding import Arg, bind, count
from dslc.lower.evaluate import Evaluator
from dslc.lower.names import key as site_key
from dslc.lower.names import module_sites, site_names, snake
from dslc.lower.scope import POISON, Frame, Poisoned, Scope
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

PARAM_TYPES: dict[str, type[Any] | tuple[type[Any], ...]] = {
    "int": int,
    "float": (int, float),
    "bool": bool,
    "str": str,
}


class Elaborator(Evaluator):
    def __init__(self, program: ast.Program, diags: Diagnostics) -> None:
        self.program = program
        self.diags = diags
        self.nodes: list[Node] = []
        self.instances: dict[str, str] = {}  # block instance path -> block name
        self.used_names: set[str] = set()
        self.blocks: dict[str, ast.Definition] = {}
        self.active: list[str] = []  # blocks being expanded, to catch recursion
        self.globals = Scope()
        self.sites: dict[str, Any] = {}  # block name -> its static layer names
        self.hint = ""  # the name the current statement defines
        self.budget = Budget()  # dslc.ir.limits: nodes and parameters so far

    # ---- diagnostics
    def report(self, err: SpecError, span: Span, frame: Frame | None = None) -> None:
        note = frame.note() if frame else None
        hint = "; ".join(h for h in (err.hint, note) if h) or None
        where = err.span or span
        if not self.diags.seen(where, err.message):
            self.diags.error(where, err.message, hint)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used_names:
            k += 1
            name = f"{base}_{k}"
        self.used_names.add(name)
        return name

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
        root.inputs, root.outputs = list(graph.inputs), list(graph.outputs.values())
        root.input_names = [v.name for v in graph.inputs]
        root.output_names = list(graph.outputs)
        if not outputs and not self.diags.has_errors:
            self.diags.error(
                model.span, f"model {model.name} declares no output", "add `output name`"
            )
        return graph, scope

    def instance(
        self, d: ast.Definition, path: str, scope: Scope, param_codes: dict[str, str]
    ) -> st.Instance:
        """The record of one instance of `d` (the model: path "")."""
        defaults = {}
        for p in d.params:
            if isinstance(p.default, ast.Literal):
                defaults[p.name] = p.default.value
        return st.Instance(
            d.name,
            path,
            {p.name: scope.vars.get(p.name) for p in d.params},
            param_codes,
            doc_comment(self.program.source, d.span.line),
            defaults=defaults,
            param_types={p.name: p.type for p in d.params},
        )

    def collect_blocks(self) -> None:
        for d in self.program.definitions:
            if d.kind != "block":
                continue
            if d.name in self.blocks:
                self.diags.error(
                    d.span,
                    f"block '{d.name}' is defined twice "
                    f"(first at line {self.blocks[d.name].span.line})",
                )
            elif d.name in REGISTRY:
                self.diags.error(
                    d.span,
                    f"block '{d.name}' has the name of a built-in {REGISTRY[d.name].family} op",
                )
            else:
                self.blocks[d.name] = d

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
        values = list(value) if len(names) > 1 and isinstance(value, tuple) else [value]
        if len(values) != len(names):
            raise SpecError(
                f"{len(names)} names on the left but the right side gives {len(values)} value(s)"
            )
        for name, v in zip(names, values, strict=True):
            self.name_value(v, frame.path + name, start)
            scope.define(name, v, stmt.span)
            if len(names) == 1 and not isinstance(v, Value | tuple | list):
                code = codes.translate(stmt.value, scope.all_codes(), v)
                if code is not None:
                    scope.codes[name] = code

    def name_value(self, v: Any, name: str, start: int) -> None:
        """Give a tensor made by this statement the name the spec gives it."""
        made_here = any(v is out for n in self.nodes[start:] for out in n.outputs)
        if isinstance(v, Value) and made_here and not v.user_named:
            self.used_names.discard(v.name)
            v.name, v.user_named = self.fresh(name), True
            v.hint = name.rsplit(".", 1)[-1]

    def output(
        self, stmt: ast.OutputDecl, scope: Scope, frame: Frame, outputs: dict, start: int
    ) -> None:
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

    # ---- structure: the Evaluator's stages and conditions, recorded for the backends
    def args(self, exprs: tuple[ast.Expr, ...], scope: Scope, frame: Frame) -> list[Arg]:
        out = super().args(exprs, scope, frame)
        table = scope.all_codes()
        for arg, e in zip(out, exprs, strict=True):
            arg.code = codes.translate(e, table, arg.value)
        return out

    def kwargs(self, kws: tuple[ast.Kwarg, ...], scope: Scope, frame: Frame) -> dict[str, Arg]:
        out = super().kwargs(kws, scope, frame)
        table = scope.all_codes()
        for kw in kws:
            out[kw.name].code = codes.translate(kw.value, table, out[kw.name].value)
        return out

    def eval(self, e: ast.Expr, scope: Scope, frame: Frame) -> Any:
        if not isinstance(e, ast.IfElse) or frame.items is None:
            return super().eval(e, scope, frame)
        taken = self.condition(e.cond, scope, frame)
        outer, frame.items = frame.items, []
        try:
            value = self.eval(e.then if taken else e.other, scope, frame)
        finally:
            inner, frame.items = frame.items, outer
        if isinstance(value, Value):
            code = codes.source(codes.translate(e.cond, scope.all_codes(), taken))
            outer.append(st.CondItem(site_key(e.span), code, taken, inner, value, self.hint))
        else:
            outer.extend(inner)
        return value

    def stage(self, value: Any, stage: ast.Stage, scope: Scope, frame: Frame) -> Any:
        match stage:
            case ast.StageNamed():
                return self.named_stage(value, stage, scope, frame)
            case ast.StageRepeat():
                return self.repeat(value, stage, scope, frame, None)
            case ast.StageSeq() if frame.seq is not None or len(stage.stages) == 1:
                for inner in stage.stages:
                    value = self.stage(value, inner, scope, frame)
                return value
        return super().stage(value, stage, scope, frame)

    def named_stage(self, value: Any, stage: ast.StageNamed, scope: Scope, frame: Frame) -> Any:
        inner = stage.stage
        while isinstance(inner, ast.StageSeq) and len(inner.stages) == 1:
            inner = inner.stages[0]
        if isinstance(inner, ast.StageRepeat) and frame.seq is None:
            return self.repeat(value, inner, scope, frame, site_key(inner.span))
        if isinstance(inner, ast.StageSeq | ast.StageRepeat):
            return self.sequence(value, inner, scope, frame, site_key(inner.span))
        return self.stage(value, inner, scope, frame)

    def sequence(self, value: Any, stage: ast.Stage, scope: Scope, frame: Frame, site) -> Any:
        """`(a -> b) as name`: an nn.Sequential whose stages are named name.0, name.1, ..."""
        path = frame.module_name(site, "layers")
        item = st.SeqItem(path.rsplit(".", 1)[-1], [], value, hint=self.hint)
        self.instances[path] = "nn.Sequential"
        inner = frame.within(path + ".", items=item.items, seq=[0])
        if isinstance(stage, ast.StageRepeat):
            value = self.repeat(value, stage, scope, inner, None)
        else:
            value = self.stage(value, stage, scope, inner)
        item.output = value if isinstance(value, Value) else None
        if frame.items is not None:
            frame.items.append(item)
        return value

    def repeat(self, value: Any, stage: ast.StageRepeat, scope: Scope, frame: Frame, named) -> Any:
        """`stage * n`: n copies in a container named by the spec or after its layers (inside an
        nn.Sequential, the copies' layers join it)."""
        n = self.repeat_count(stage.count, scope, frame)
        code = codes.source(codes.translate(stage.count, scope.all_codes(), n))
        if frame.seq is not None:
            item = st.RepeatItem("", n, code, sequential=True)

            def within(i: int) -> Frame:
                return frame.within(frame.path, seq=frame.seq)
        else:
            site = named or site_key(stage.span)
            container = frame.path + frame.sites.names.get(site, frame.sites.auto("layer"))
            several = module_sites(stage.stage, set(self.blocks)) > 1
            item = st.RepeatItem(container.rsplit(".", 1)[-1], n, code, sequential=several)
            self.instances[container] = "nn.Sequential" if several else "nn.ModuleList"
            seq = [0] if several else None

            def within(i: int) -> Frame:
                if several:
                    return frame.within(f"{container}.", seq=seq)
                return frame.within(f"{container}.{i}.", single=f"{container}.{i}")

        start = self.budget.nodes
        for i in range(n):
            copy = st.Copy([], value)
            inner = within(i)
            inner.items = copy.items
            value = self.stage(value, stage.stage, scope, inner)
            copy.output = value if isinstance(value, Value) else None
            item.copies.append(copy)
            if i == 0:  # refuse at once copies that would pass the node limit
                self.budget.repeat(n, self.budget.nodes - start, stage.span)
        if frame.items is not None:
            frame.items.append(item)
        return value

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
        params = {k: _given(op, k, p, attrs, span) for k, p in params.items()}
        self.budget.node(op, in_types, outs, attrs, params, span, Poisoned)
        named = site is not None and site in frame.sites.names
        as_module = not op.module and (named or frame.seq is not None)
        if op.module or as_module:
            name = frame.module_name(site, op.node_prefix)
        else:
            name = frame.name(op.node_prefix)
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
        return values[0] if len(values) == 1 else tuple(values)

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

    def call_block(
        self, d: ast.Definition, span: Span, args: list[Arg], kwargs: dict[str, Arg], frame: Frame
    ) -> Any:
        n_in = sum(isinstance(s, ast.InputDecl) for s in d.body)
        tensors = [a.value for a in args[:n_in] if isinstance(a.value, Value)]
        if len(tensors) != n_in:
            raise SpecError(
                f"block {d.name} takes {count(n_in, 'tensor input')}, got {len(tensors)}",
                span=span,
            )
        if d.name in self.active:
            raise SpecError(f"block {d.name} calls itself", span=span)
        scope = Scope(self.globals)
        self.bind_params(d, args[n_in:], kwargs, scope, span)
        scope.codes = {p.name: pyname(p.name) for p in d.params}
        path = frame.module_name(site_key(span), snake(d.name))
        instance = self.instance(d, path, scope, param_codes(d, args[n_in:], kwargs))
        instance.inputs = list(tensors)
        instance.input_names = [s.name for s in d.body if isinstance(s, ast.InputDecl)]
        inner = Frame(path + ".", self.block_sites(d), instance.items, (d.name, span), frame)
        self.instances[path] = d.name
        self.active.append(d.name)
        hint = self.hint
        try:
            outputs = self.body(d, inner, scope, list(tensors), None)
        finally:
            self.active.pop()
            self.hint = hint
        if any(v is POISON for v in outputs.values()):
            raise Poisoned()
        if not outputs:
            raise SpecError(
                f"block {d.name} declares no output", "add `output y = ...` to the block", d.span
            )
        values = tuple(outputs.values())
        instance.outputs, instance.output_names = list(values), list(outputs)
        if frame.items is not None:
            frame.items.append(st.CallItem(instance, hint))
        return values[0] if len(values) == 1 else values

    def block_sites(self, d: ast.Definition):
        if d.name not in self.sites:
            self.sites[d.name] = site_names(d.body, set(self.blocks))
        return self.sites[d.name]

    def bind_params(
        self,
        d: ast.Definition,
        args: list[Arg],
        kwargs: dict,
        scope: Scope,
        span: Span,
        overrides_given: bool = False,
    ) -> None:
        """Bind a block's (or the model's) compile-time parameters: positional, keyword, default."""
        names = [p.name for p in d.params]
        if len(args) > len(names):
            raise SpecError(
                f"{d.kind} {d.name} takes {len(names)} parameter(s), got {len(args)}",
                hint=f"{d.name}({', '.join(names)})",
                span=args[len(names)].span,
            )
        given = {p.name: a for p, a in zip(d.params, args, strict=False)}
        for key, arg in kwargs.items():
            if key not in names:
                if overrides_given:
                    raise SpecError(
                        f"model {d.name} has no parameter '{key}'", suggest(key, names), d.span
                    )
                raise SpecError(
                    f"{d.kind} {d.name} has no parameter '{key}'",
                    suggest(key, names),
                    getattr(arg, "span", span),
                )
            if key in given:
                raise SpecError(
                    f"{d.kind} {d.name}: parameter '{key}' is given twice",
                    span=getattr(arg, "span", span),
                )
            given[key] = arg if isinstance(arg, Arg) else Arg(arg, d.span)
        for p in d.params:
            if p.type not in PARAM_TYPES:
                raise SpecError(
                    f"unknown parameter type '{p.type}'", f"one of {', '.join(PARAM_TYPES)}", p.span
                )
            if p.name in given:
                value, where = given[p.name].value, given[p.name].span
            elif p.default is not None:
                value, where = self.eval(p.default, scope, Frame()), p.span
            elif overrides_given:
                raise SpecError(
                    f"model parameter '{p.name}' has no value",
                    span=p.span,
                    hint=f"give it a default (`{p.name}: {p.type} = ...`) "
                    f"or pass --param {p.name}=VALUE",
                )
            else:
                raise SpecError(f"{d.kind} {d.name}: missing parameter '{p.name}'", span=span)
            if (
                isinstance(value, bool)
                and p.type != "bool"
                or not isinstance(value, PARAM_TYPES[p.type])
            ):
                raise SpecError(
                    f"{d.kind} {d.name}: parameter '{p.name}' is {p.type}, got {describe(value)}",
                    span=where,
                )
            scope.define(p.name, float(value) if p.type == "float" else value, p.span)


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


def param_codes(d: ast.Definition, args: list[Arg], kwargs: dict) -> dict[str, str]:
    """The Python source a call site gives for each parameter it passes."""
    out = {p.name: a.code for p, a in zip(d.params, args, strict=False)}
    out |= {k: a.code for k, a in kwargs.items() if isinstance(a, Arg)}
    return {k: text for k, c in out.items() if (text := codes.source(c)) is not None}


def pyname(name: str):
    import ast as py

    return py.Name(codes.name(name), py.Load())


def doc_comment(source: str, line: int) -> str:
    """The comment lines right above line `line` (1-based), without their `#`: a block's
    docstring in the generated code."""
    lines = source.splitlines()
    out: list[str] = []
    i = line - 2
    while 0 <= i < len(lines) and lines[i].lstrip().startswith("#"):
        out.insert(0, lines[i].lstrip()[1:].strip())
        i -= 1
    return "\n".join(out)
