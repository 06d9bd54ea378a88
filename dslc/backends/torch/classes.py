"""One nn.Module class per block definition (and one for the model), written from the block
structure (dslc.ir.structure) of all its instances at once: __init__ builds the layers from
the class's arguments, forward runs them with the spec's names, a repetition is an
nn.ModuleList and a loop, a named sequence an nn.Sequential, a condition an `if`.

Where the instances of a block differ in a way one class cannot express (values.NotGeneric),
classes.py writes one class per distinct instantiation instead (see docs/architecture.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dslc.backends.torch import fmt
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
from dslc.ir.graph import Value
from dslc.names import Namespace
from dslc.ops.pycode import NO_DEFAULT, Ctor, py

Line = tuple[int, str, str]  # indent, code, comment


@dataclass
class Ctx:
    """Where the items being written go: `collect` gathers module constructors (of a
    repetition's copies or a sequence's stages) instead of attributes, whose reference is
    then `ref`; `seq`: inside an nn.Sequential, with no forward lines of its own; `var`: the
    variable a loop body carries; `cond`: the condition under which modules exist; `attrs`
    gathers the attributes made under it."""

    collect: list[str] | None = None
    ref: str = ""
    seq: bool = False
    var: str | None = None
    cond: str | None = None
    attrs: list[str] | None = None


@dataclass
class ClassInfo:
    """A written class: its name, the input dims its constructor takes first (input index,
    dim, argument name), its parameters, and its source lines."""

    name: str
    dim_args: list[tuple[int, int, str]]
    params: list[str]
    required: list[str]
    lines: list[str] = field(default_factory=list)


class Writer:
    def __init__(self, name: str, instances: list[st.Instance], generic: bool, classes) -> None:
        self.name = name
        self.instances = instances
        self.generic = generic
        self.classes = classes  # id(instance) -> ClassInfo of the nested blocks, written first
        self.init: list[Line] = []
        self.fwd: list[Line] = []
        self.ns = Namespace(RESERVED)
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
        required = [p for p in params if p not in first.defaults]
        info = ClassInfo(self.name, sorted(used), params, required)
        info.lines = self.source(info, inputs, outs, occs)
        return info

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
        lines += ["", *fmt.wrap(f"def forward({', '.join(['self', *inputs])}):", 4)]
        lines += [
            f"        # {n}: {v.type.shape_str()}"
            for n, v in zip(inputs, first.inputs, strict=True)
            if not self.generic
        ]
        lines += render(self.fwd)
        lines.append(f"        return {', '.join(outs)}")
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
        if module:
            ctors = [n.op.torch_module(n) or n.op.torch_layer(n) for n in nodes]
            code = self.ctor(ctors, nodes, occs)
            ref = self.module(nodes[0].name, code, indent, ctx)
        for occ, node in zip(occs, nodes, strict=True):
            output_dims(occ, node)
        if ctx.seq:
            return
        calls = [
            n.op.torch_call(n, [o.vars[id(v)] for v in n.inputs], ref)
            for n, o in zip(nodes, occs, strict=True)
        ]
        ends = [(n.inputs, n.outputs) for n in nodes]
        self.line(calls, ends, occs, indent, ctx, None, f"{nodes[0].op.name} differs")

    def call(self, row: list[st.CallItem], occs: list[Occ], indent: int, ctx) -> None:
        insts = [r.instance for r in row]
        info = self.classes[id(insts[0])]
        if any(self.classes[id(i)].name != info.name for i in insts):
            raise NotGeneric("instances call different classes")
        code = self.block_ctor(info, insts, occs)
        ref = self.module(insts[0].path, code, indent, ctx)
        for occ, inst in zip(occs, insts, strict=True):
            call_dims(occ, inst)
        if ctx.seq:
            return
        calls = [
            f"{ref}({', '.join(o.vars[id(v)] for v in i.inputs)})"
            for o, i in zip(occs, insts, strict=True)
        ]
        ends = [(i.inputs, i.outputs) for i in insts]
        self.line(calls, ends, occs, indent, ctx, row[0].hint, "block inputs differ")

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
                c = [python(inst.param_codes[p])] if o.generic and p in inst.param_codes else []
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
    def line(self, calls: list[str], ends, occs: list[Occ], indent: int, ctx: Ctx, hint, what):
        """`out = call` in forward: the call must read alike in every occurrence; `ends`:
        each occurrence's values read and values made."""
        code = choose([[c] for c in calls], what)
        consume(occs, [reads for reads, _ in ends])
        self.assign([made for _, made in ends], occs, code, indent, ctx, hint)

    def assign(
        self,
        outputs: list[list[Value]],
        occs: list[Occ],
        code: str,
        indent,
        ctx,
        hint: str | None = None,
    ) -> None:
        force = ctx.var
        names = []
        for k, v in enumerate(outputs[0]):
            name = force if force and len(outputs[0]) == 1 else self.var_for(v, occs[0], hint)
            names.append(name)
            for occ, outs in zip(occs, outputs, strict=True):
                occ.vars[id(outs[k])] = name
                occ.uses.setdefault(id(outs[k]), 0)
        shapes = {", ".join(v.type.shape_str() for v in outs) for outs in outputs}
        comment = shapes.pop() if len(shapes) == 1 else ""
        self.fwd.append((indent, f"{', '.join(names)} = {code}", comment))

    def var_for(self, v: Value, occ: Occ, hint: str | None = None) -> str:
        base = variable(hint or v.hint or "x")
        for name in [base]:
            holder = [k for k, var in occ.vars.items() if var == name]
            if not any(occ.uses.get(k, 0) > 0 for k in holder):
                self.ns.taken.add(name)
                return name
        return self.ns.create(base)

    # ---- structure
    def repeat(self, row: list[st.RepeatItem], occs: list[Occ], indent: int, ctx) -> None:
        first = row[0]
        if first.sequential or ctx.seq:
            self.joined(row, occs, indent, ctx)
            return
        count = self.count(row)
        attr = f"self.{first.name}"
        elem = self.ns.create(variable(first.name[:-1] if first.name.endswith("s") else "layer"))
        loop_var = self.loop_var(row, occs)
        copies = [(o, c) for o, r in zip(occs, row, strict=True) for c in r.copies]
        init_at, fwd_at = len(self.init), len(self.fwd)
        try:
            elements = self.body(copies, indent, elem, loop_var)
            self.container(attr, elements, [], count)
        except NotGeneric:  # the first copy differs (its input): build it apart
            del self.init[init_at:], self.fwd[fwd_at:]
            heads = [(o, r.copies[0]) for o, r in zip(occs, row, strict=True)]
            tails = [(o, c) for o, r in zip(occs, row, strict=True) for c in r.copies[1:]]
            if not tails:
                raise
            head = self.body(heads, indent, elem, loop_var)
            del self.fwd[fwd_at:]
            tail = self.body(tails, indent, elem, loop_var)
            self.container(attr, head, tail, _minus_one(count))
        body = self.fwd[fwd_at:]
        del self.fwd[fwd_at:]
        has_module = any(code.startswith(f"{attr} =") for _, code, _ in self.init[init_at:])
        header = f"for {elem} in {attr}:" if has_module else f"for _ in range({count}):"
        self.fwd += [(indent, header, ""), *body]
        for occ, r in zip(occs, row, strict=True):
            if r.copies and r.copies[-1].output is not None:
                occ.vars[id(r.copies[-1].output)] = loop_var

    def body(self, copies, indent: int, elem: str, loop_var: str) -> list[str]:
        """The loop body of a repetition (forward lines) and its modules' constructors."""
        elements: list[str] = []
        ctx = Ctx(collect=elements, ref=elem, var=loop_var)
        self.items([c.items for _, c in copies], [o for o, _ in copies], indent + 4, ctx)
        return elements

    def count(self, row: list[st.RepeatItem]) -> str:
        cands = [
            ([python(r.count_code)] if self.generic and r.count_code else []) + [str(r.count)]
            for r in row
        ]
        return choose(cands, "repeat counts")

    def loop_var(self, row: list[st.RepeatItem], occs: list[Occ]) -> str:
        """The variable the loop carries: the input's, unless that value is read again later."""
        occ, r = occs[0], row[0]
        start = r.copies[0].input
        var = occ.vars[id(start)]
        name = var
        if occ.uses.get(id(start), 0) > 1:
            out = r.copies[-1].output
            name = self.ns.create(variable(out.hint if out is not None and out.hint else "x"))
            self.fwd.append((8, f"{name} = {var}", ""))
        for o, rr in zip(occs, row, strict=True):
            for c in rr.copies:
                o.vars[id(c.input)] = name
        return name

    def container(self, attr: str, head: list[str], tail: list[str], count: str) -> None:
        """`self.blocks = nn.ModuleList([...])`: one comprehension when every copy is built
        alike, else the first copy and then the rest."""
        if not head:
            return
        if not tail:
            self.init.append(
                (8, f"{attr} = nn.ModuleList([{head[0]} for _ in range({count})])", "")
            )
            return
        self.init.append((8, f"{attr} = nn.ModuleList([{head[0]}])", ""))
        self.init.append((8, f"{attr}.extend({tail[0]} for _ in range({count}))", ""))

    def joined(self, row: list[st.RepeatItem], occs: list[Occ], indent: int, ctx: Ctx) -> None:
        """A repetition of several layers (or inside a sequence): their constructors in turn."""
        elements: list[str] = []
        sub = Ctx(collect=elements, seq=True)
        copies = [(o, c) for o, r in zip(occs, row, strict=True) for c in r.copies]
        explicit = False
        try:
            self.items([c.items for _, c in copies], [o for o, _ in copies], indent, sub)
        except NotGeneric:
            if self.generic:
                raise
            elements.clear()  # a concrete class: each copy's layers as they are
            for occ, copy in copies:
                self.items([copy.items], [occ], indent, sub)
            explicit = True
        if not explicit:
            elements = _runs(elements, self.count(row))
        if ctx.collect is not None:
            ctx.collect.extend(elements)
            return
        ends = [(r.copies[0].input, r.copies[-1].output) for r in row]
        self.sequential(row[0].name, elements, ends, occs, indent, ctx, "")

    def sequence(self, row: list[st.SeqItem], occs: list[Occ], indent: int, ctx: Ctx) -> None:
        elements: list[str] = []
        self.items([r.items for r in row], occs, indent, Ctx(collect=elements, seq=True))
        ends = [(r.input, r.output) for r in row]
        self.sequential(row[0].name, elements, ends, occs, indent, ctx, row[0].hint)

    def sequential(self, name, elements, ends, occs: list[Occ], indent: int, ctx: Ctx, hint):
        """`self.name = nn.Sequential(...)`, and in forward `out = self.name(x)`; `ends`: each
        occurrence's input and output values."""
        ref = self.module(name, f"nn.Sequential({', '.join(elements)})", indent, ctx)
        if ctx.seq:
            return
        calls = [f"{ref}({o.vars[id(start)]})" for o, (start, _) in zip(occs, ends, strict=True)]
        self.line(calls, [([a], [b]) for a, b in ends], occs, indent, ctx, hint, "inputs differ")

    def condition(self, row: list[st.CondItem], occs: list[Occ], indent: int, ctx) -> None:
        taken = {r.taken for r in row}
        if len(taken) == 1:
            self.items([r.items for r in row], occs, indent, ctx)
            return
        if row[0].code is None:
            raise NotGeneric("a condition without a Python form")
        code = python(row[0].code)
        branches = []
        for want in (True, False):
            sel = [(o, r) for o, r in zip(occs, row, strict=True) if r.taken == want]
            sub = Ctx(cond=code if want else f"not ({code})", attrs=[])
            start = len(self.fwd)
            self.items([r.items for _, r in sel], [o for o, _ in sel], indent + 4, sub)
            lines = self.fwd[start:]
            del self.fwd[start:]
            results = [[o.vars[id(r.result)]] for o, r in sel]
            branches.append((lines, choose(results, "condition results"), sub.attrs or []))
        (t_lines, t_var, t_attrs), (e_lines, e_var, e_attrs) = branches
        guard = self.guard(code, t_attrs, e_attrs)
        result = variable(row[0].hint or "x")
        self.ns.taken.add(result)
        for o, r in zip(occs, row, strict=True):
            o.vars[id(r.result)] = result
        self.emit_if(guard, t_lines, t_var, e_lines, e_var, result, indent)

    def guard(self, code: str, t_attrs: list[str], e_attrs: list[str]) -> str:
        if t_attrs:
            return f"self.{t_attrs[0]} is not None"
        if e_attrs:
            return f"self.{e_attrs[0]} is None"
        flag = code if code.isidentifier() else f"condition{self.flags + 1}"
        self.flags += 1
        self.init.append((8, f"self.{flag} = {code}", ""))
        return f"self.{flag}"

    def emit_if(self, guard, t_lines, t_var, e_lines, e_var, result, indent) -> None:
        def ending(lines, var):
            if lines and lines[-1][1].startswith(f"{var} = ") and var != result:
                last = lines[-1]
                return [*lines[:-1], (last[0], result + last[1][len(var) :], last[2])]
            return lines if var == result else [*lines, (indent + 4, f"{result} = {var}", "")]

        t_lines, e_lines = ending(t_lines, t_var), ending(e_lines, e_var)
        if len(t_lines) == 1 and len(e_lines) == 1:
            a = t_lines[0][1].split(" = ", 1)[1]
            b = e_lines[0][1].split(" = ", 1)[1]
            one = f"{result} = {a} if {guard} else {b}"
            if indent + len(one) <= fmt.WIDTH:
                self.fwd.append((indent, one, t_lines[0][2]))
                return
        self.fwd += [(indent, f"if {guard}:", ""), *t_lines, (indent, "else:", ""), *e_lines]


def _minus_one(count: str) -> str:
    return str(int(count) - 1) if count.isdigit() else f"{count} - 1"


def _runs(elements: list[str], count: str) -> list[str]:
    """The constructors of a repetition inside an nn.Sequential, each copy built alike:
    `*[X for _ in range(n)]` for one module a copy, else each copy's modules in turn."""
    if len(elements) == 1:
        return [f"*[{elements[0]} for _ in range({count})]"]
    if count.isdigit():
        return elements * int(count)
    return [f"*[m for _ in range({count}) for m in ({', '.join(elements)})]"]


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
