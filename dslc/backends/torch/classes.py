"""One nn.Module class per block definition (and one for the model), written from the block
structure (dslc.ir.structure) of all its instances at once: __init__ builds the layers from
the class's arguments, forward runs them with the spec's names, a repetition is an
nn.ModuleList and a loop, a named sequence an nn.Sequential, a condition an `if`.

Where the instances of a block differ in a way one class cannot express (values.NotGeneric),
classes.py writes one class per distinct instantiation instead (see docs/architecture.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from dslc.backends.torch import fmt
from dslc.backends.torch.control import Control, Ctx, Line
from dslc.backends.torch.kvcache import CACHE_INIT, CACHE_INIT_COMMENT, extend_lines
from dslc.backends.torch.pynames import RESERVED, python, variable
from dslc.backends.torch.values import (
    NotGeneric,
    Occ,
    call_dims,
    choose,
    input_dims,
    norm,
    output_dims,
)
from dslc.ir import structure as st
from dslc.ir.causal import Entry
from dslc.ir.graph import Value
from dslc.names import Namespace
from dslc.ops.pycode import NO_DEFAULT, TUPLE, Ctor, Source, py


@dataclass
class ClassInfo:
    """A written class: its name, the input dims its constructor takes first (input index,
    dim, argument name), its parameters, and its source lines."""

    name: str
    dim_args: list[tuple[int, int, str]]
    params: list[str]
    required: list[str]
    lines: list[str] = field(default_factory=list)


class Writer(Control):
    def __init__(
        self,
        name: str,
        instances: list[st.Instance],
        generic: bool,
        classes,
        reserved: frozenset[str] = RESERVED,
        kept: dict[int, Entry] | None = None,
    ) -> None:
        self.name = name
        self.kept = kept or {}  # the keys and values a decoder keeps, by id of their value
        self.keeps = False  # whether forward extends one: the class has a `cache`
        self.instances = instances
        self.generic = generic
        self.classes = classes  # id(instance) -> ClassInfo of the nested blocks, written first
        self.init: list[Line] = []
        self.fwd: list[Line] = []
        self.ns = Namespace(reserved)  # the module's own names and its helpers' are taken
        self.dim_names: dict[tuple[int, int], str] = {}
        self.flags = 0

    # ---- the class
    def write(self) -> ClassInfo:
        first = self.instances[0]
        occs = [Occ(i, self.generic) for i in self.instances]
        params = list(first.params) if self.generic else []
        inputs = [self.ns.create(variable(n)) for n in first.input_names]
        for occ in occs:
            input_dims(occ, self.dim_names)
            for v, var in zip(occ.instance.inputs, inputs, strict=True):
                occ.vars[id(v)] = var
            count_uses(occ)
        self.items([o.instance.items for o in occs], occs, 8, Ctx())
        outs = [
            choose([[o.vars[id(o.instance.outputs[k])]] for o in occs], "outputs")
            for k in range(len(first.outputs))
        ]
        used = [(i, d, n) for (i, d), n in self.dim_names.items() if self._used(n)]
        params = [p for p in params if self._reads(variable(p))]
        required = [p for p in params if p not in first.defaults]
        info = ClassInfo(self.name, sorted(used), params, required)
        info.lines = self.source(info, inputs, outs, occs)
        return info

    def _reads(self, name: str) -> bool:
        """Whether the class reads the block parameter `name`: one that every instance uses
        alike (a batch norm's `frozen`, the same in each) leaves no trace in the code, so the
        class does not take it."""
        word = re.compile(rf"\b{re.escape(name)}\b")
        return any(word.search(code) for _, code, _ in [*self.init, *self.fwd])

    def _used(self, name: str) -> bool:
        """Whether __init__ reads the constructor argument `name` (an input dim)."""
        word = re.compile(rf"\b{re.escape(name)}\b")
        return any(word.search(code) for _, code, _ in self.init)

    def source(self, info: ClassInfo, inputs: list[str], outs: list[str], occs) -> list[str]:
        first = self.instances[0]
        sig = [n for _, _, n in info.dim_args]
        sig += [variable(p) for p in info.required]
        sig += [
            f"{variable(p)}={py(first.defaults[p])}" for p in info.params if p in first.defaults
        ]
        lines = [f"class {info.name}(nn.Module):"]
        if first.doc:
            lines += [*fmt.docstring(first.doc, 4), ""]
        lines += fmt.wrap(f"def __init__({', '.join(['self', *sig])}):", 4)
        lines.append("        super().__init__()")
        lines += render(self.init)
        if self.keeps:
            lines += fmt.wrap(CACHE_INIT, 8, CACHE_INIT_COMMENT)
        lines += ["", *fmt.wrap(f"def forward({', '.join(['self', *inputs])}):", 4)]
        lines += [
            f"        # {n}: {v.type.shape_str()}"
            for n, v in zip(inputs, first.inputs, strict=True)
            if not self.generic
        ]
        lines += render(self.fwd)
        returned = ", ".join(outs)
        if len(outs) > 1 and 15 + len(returned) > fmt.WIDTH:  # as ruff wraps a long tuple
            returned = f"({returned})"
        lines += fmt.wrap(f"return {returned}", 8)
        return lines

    # ---- items
    def items(self, lists: list[list[st.Item]], occs: list[Occ], indent: int, ctx: Ctx) -> None:
        n = len(lists[0])
        if any(len(lst) != n for lst in lists):
            raise NotGeneric("instances hold different items")
        for j in range(n):
            row = [lst[j] for lst in lists]
            if any(type(r) is not type(row[0]) for r in row):
                raise NotGeneric("instances hold different kinds of items")
            write = {
                st.OpItem: self.op,
                st.CallItem: self.call,
                st.RepeatItem: self.repeat,
                st.SeqItem: self.sequence,
                st.CondItem: self.condition,
            }[type(row[0])]
            write(row, occs, indent, ctx)  # type: ignore[operator]  # one kind per row

    def op(self, row: list[st.OpItem], occs: list[Occ], indent: int, ctx) -> None:
        nodes = [r.node for r in row]
        module = nodes[0].op.module or row[0].as_module
        ref = None
        for occ, node in zip(occs, nodes, strict=True):  # first, as in `call`
            output_dims(occ, node)
        if module:
            ctors = [n.op.torch_module(n) or n.op.torch_layer(n) for n in nodes]
            code = self.ctor(ctors, nodes, occs)
            ref = self.module(nodes[0].name, code, indent, ctx)
        if ctx.seq:
            return
        shown = self.forward_attrs(nodes, occs)
        calls = [
            n.op.torch_call(
                replace(n, attrs={**n.attrs, **shown}), [o.vars[id(v)] for v in n.inputs], ref
            )
            for n, o in zip(nodes, occs, strict=True)
        ]
        if ref is not None and not ctx.var and all(c == ref for c in calls):
            for occ, node in zip(occs, nodes, strict=True):  # a learned tensor: read in place
                occ.vars[id(node.output)] = ref
                occ.uses.setdefault(id(node.output), 0)
            return
        ends = [(n.inputs, n.outputs) for n in nodes]
        op = nodes[0].op
        self.line(calls, ends, occs, indent, ctx, None, f"{op.name} differs", op.torch_targets)

    def forward_attrs(self, nodes, occs: list[Occ]) -> dict[str, Source]:
        """Attributes a functional op reads in forward (its `forward_attrs`) that the spec
        gives as an expression over the block's parameters: kept on the module in __init__
        (`self.drop = drop`), and read from there."""
        out: dict[str, Source] = {}
        if not self.generic:
            return out
        for key in nodes[0].op.forward_attrs:
            codes = {occs[0].source(n.codes[key][0]) if key in n.codes else None for n in nodes}
            code = codes.pop() if len(codes) == 1 else None
            if code is None or code == py(nodes[0].attrs[key]):
                continue
            name = code if code.isidentifier() else key
            taken = {c.split(" = ")[0] for _, c, _ in self.init if c.startswith("self.")}
            if f"self.{name}" in taken and (8, f"self.{name} = {code}", "") not in self.init:
                name = f"{name}_{key}"  # a layer has that name already
            line = (8, f"self.{name} = {code}", "")
            if line not in self.init:
                self.init.append(line)
            out[key] = Source(f"self.{name}")
        return out

    def call(self, row: list[st.CallItem], occs: list[Occ], indent: int, ctx) -> None:
        insts = [r.instance for r in row]
        info = self.classes[id(insts[0])]
        if any(self.classes[id(i)].name != info.name for i in insts):
            raise NotGeneric("instances call different classes")
        for occ, inst in zip(occs, insts, strict=True):  # first: a copy's input is the
            call_dims(occ, inst)  # output of the copy before it, whose dims the ctor reads
        code = self.block_ctor(info, insts, occs)
        ref = self.module(insts[0].path, code, indent, ctx)
        if ctx.seq:
            return
        calls = [
            f"{ref}({', '.join(o.vars[id(v)] for v in i.inputs)})"
            for o, i in zip(occs, insts, strict=True)
        ]
        ends = [(i.inputs, i.outputs) for i in insts]  # a kept output: extended in the block
        self.line(calls, ends, occs, indent, ctx, row[0].hint, "block inputs differ", extend=False)

    def block_ctor(self, info: ClassInfo, insts: list[st.Instance], occs: list[Occ]) -> str:
        parts = []
        for i, d, _ in info.dim_args:
            cands = [o.dim_cands(inst.inputs[i], d) for o, inst in zip(occs, insts, strict=True)]
            parts.append(choose(cands, f"{info.name}: input dims"))
        for p in info.params:
            given = any(p in inst.param_codes or p not in inst.defaults for inst in insts)
            if not given:
                continue
            cands = []
            for o, inst in zip(occs, insts, strict=True):
                code = inst.param_codes.get(p) if o.generic else None
                c = [text] if code and (text := o.source(code)) else []
                cands.append([*c, py(inst.params[p])])
            value = choose(cands, f"{info.name}: parameter {p}")
            parts.append(value if p in info.required else f"{variable(p)}={value}")
        return f"{info.name}({', '.join(parts)})"

    def ctor(self, made: list[Ctor | None], nodes, occs: list[Occ]) -> str:
        ctors = [c for c in made if c is not None]
        if len(ctors) != len(made) or any(c.func != ctors[0].func for c in ctors):
            raise NotGeneric("modules differ")
        first = ctors[0]
        parts = []
        for i in range(len(first.args)):
            if isinstance(first.args[i].value, Ctor):  # a constructor inside: torch.zeros(...)
                parts.append(self.ctor([c.args[i].value for c in ctors], nodes, occs))
                continue
            cands = [o.arg_cands(n, c.args[i]) for o, n, c in zip(occs, nodes, ctors, strict=True)]
            parts.append(choose(cands, f"{first.func} argument {i}"))
        for k, (name, arg) in enumerate(first.kwargs):
            args = [c.kwargs[k][1] for c in ctors]
            spelled = self.generic and any(_spelled(n, a) for n, a in zip(nodes, args, strict=True))
            if (
                arg.default is not NO_DEFAULT
                and not spelled
                and all(norm(a.value) == norm(a.default) for a in args)
            ):
                continue
            cands = [o.arg_cands(n, a) for o, n, a in zip(occs, nodes, args, strict=True)]
            parts.append(f"{name}={choose(cands, f'{first.func} argument {name}')}")
        if first.func == TUPLE:
            return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
        return f"{first.func}({', '.join(parts)})"

    def module(self, path: str, code: str, indent: int, ctx) -> str:
        """Record a module's constructor where the context wants it; its reference."""
        if ctx.collect is not None:
            ctx.collect.append(code)
            return ctx.ref
        attr = path.rsplit(".", 1)[-1]
        cond = ctx.cond
        line = f"self.{attr} = {code}"
        if not cond:
            self.init.append((8, line, ""))
        elif len(line) + len(cond) + 22 <= fmt.WIDTH:
            self.init.append((8, f"{line} if {cond} else None", ""))
        else:
            self.init += [(8, f"self.{attr} = None", ""), (8, f"if {cond}:", ""), (12, line, "")]
        if ctx.attrs is not None:
            ctx.attrs.append(attr)
        return f"self.{attr}"

    # ---- forward statements
    def line(
        self,
        calls: list[str],
        ends,
        occs: list[Occ],
        indent: int,
        ctx: Ctx,
        hint,
        what,
        targets=None,
        extend: bool = True,
    ):
        """`out = call` in forward: the call must read alike in every occurrence; `ends`:
        each occurrence's values read and values made; `targets` nests the names an op's
        call returns (OpDef.torch_targets); `extend`: a kept key or value it makes is
        extended by the cache here."""
        code = choose([[c] for c in calls], what)
        consume(occs, [reads for reads, _ in ends])
        made = [made for _, made in ends]
        self.assign(made, occs, code, indent, ctx, hint, targets, extend and ctx.var is None)

    def assign(
        self,
        outputs: list[list[Value]],
        occs: list[Occ],
        code: str,
        indent,
        ctx,
        hint: str | None = None,
        targets=None,
        extend: bool = True,
    ) -> None:
        force = ctx.var
        names = []
        several = len(outputs[0]) > 1
        for k, v in enumerate(outputs[0]):
            unread = several and all(
                occ.uses.get(id(o[k]), 0) == 0 for occ, o in zip(occs, outputs, strict=True)
            )
            if force and k == 0:  # a loop carries the (first) output
                name = force
            else:  # the statement names its first value; the others keep their own names
                name = "_" if unread else self.var_for(v, occs[0], hint if k == 0 else None)
            names.append(name)
            for occ, outs in zip(occs, outputs, strict=True):
                occ.vars[id(outs[k])] = name
                occ.uses.setdefault(id(outs[k]), 0)
        shapes = {", ".join(v.type.shape_str() for v in outs) for outs in outputs}
        comment = shapes.pop() if len(shapes) == 1 else ""
        left = targets(names) if targets else ", ".join(names)
        self.fwd.append((indent, f"{left} = {code}", comment))
        if extend:  # not in a loop's body: its output is extended after the loop (control.py)
            self.extend(names, outputs, indent)

    def extend(self, names: list[str], outputs: list[list[Value]], indent: int) -> None:
        """Keys or values the decoder keeps: the cache's earlier positions go before them."""
        found = []
        for k, name in enumerate(names):
            kept = {(e.axis, e.kind) if (e := self.kept.get(id(o[k]))) else None for o in outputs}
            if len(kept) > 1:
                raise NotGeneric("instances keep different tensors")
            if (entry := kept.pop()) is not None:
                found.append((name, *entry))
        if found:
            self.fwd += extend_lines(found, indent)
            self.keeps = True

    def var_for(self, v: Value, occ: Occ, hint: str | None = None) -> str:
        base = variable(hint or v.hint or "x")
        for name in [base]:
            holder = [k for k, var in occ.vars.items() if var == name]
            if not any(occ.uses.get(k, 0) > 0 for k in holder):
                self.ns.taken.add(name)
                return name
        return self.ns.create(base)


def _spelled(node, arg) -> bool:
    """The spec gives this argument an expression over the block's parameters (not a number),
    so the class passes it on even where it equals the default."""
    code = node.codes.get(arg.attr, (None, None))[0] if arg.attr else None
    return code is not None and python(code) != py(node.codes[arg.attr][1])


def consume(occs: list[Occ], inputs: list[list[Value]]) -> None:
    for occ, values in zip(occs, inputs, strict=True):
        for v in values:
            occ.uses[id(v)] = occ.uses.get(id(v), 1) - 1


def count_uses(occ: Occ) -> None:
    """How often each value is read in the instance (outputs count as read forever)."""
    for item in st.walk(occ.instance.items):
        reads: list[Value] = []
        if isinstance(item, st.OpItem):
            reads = item.node.inputs
        elif isinstance(item, st.CallItem):
            reads = item.instance.inputs
        for v in reads:
            occ.uses[id(v)] = occ.uses.get(id(v), 0) + 1
    for v in occ.instance.outputs:
        occ.uses[id(v)] = occ.uses.get(id(v), 0) + 1000


def render(lines: list[Line]) -> list[str]:
    out = []
    for indent, code, comment in lines:
        out += fmt.wrap(code, indent, comment)
    return out
