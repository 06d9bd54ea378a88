"""The structure half of a class's code: a repetition as an nn.ModuleList and a loop (or, of
several layers, an nn.Sequential), a named sequence as an nn.Sequential, a condition that
differs between instances as layers built `if cond` and an `if` in forward. Writer
(classes.py) supplies the items, constructors and forward lines these are made of."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dslc.backends.torch import fmt
from dslc.backends.torch.pynames import variable
from dslc.backends.torch.values import NotGeneric, Occ, choose
from dslc.ir import structure as st
from dslc.names import Namespace

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


class Control:
    """Supplied by Writer: the lines written so far and the methods that write items."""

    init: list[Line]
    fwd: list[Line]
    ns: Namespace
    generic: bool
    flags: int
    items: Any
    module: Any
    line: Any
    extend: Any

    def repeat(self, row: list[st.RepeatItem], occs: list[Occ], indent: int, ctx) -> None:
        first = row[0]
        if not any(_builds(c.items) for r in row for c in r.copies):
            return  # no layers in any copy (`stage * 0`, or a repetition of one): the identity
        if ctx.seq and ctx.collect is not None:  # its layers join the sequence around it
            self.joined(row, occs, indent, ctx)
            return
        if any(not r.copies for r in row):
            raise NotGeneric("some instances repeat a stage no times")
        if first.sequential:
            self.joined(row, occs, indent, ctx)
            return
        count = self.count(row, occs)
        attr = f"self.{first.name}"
        elem = self.ns.create(variable(first.name[:-1] if first.name.endswith("s") else "layer"))
        starts = [
            (o, c.input, o.vars[id(c.input)]) for o, c in zip(occs, _firsts(row), strict=True)
        ]
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
        for occ, start, var in starts:  # read after the loop, the input is still its own
            occ.vars[id(start)] = var
        for occ, r in zip(occs, row, strict=True):
            if r.copies and r.copies[-1].output is not None:
                occ.vars[id(r.copies[-1].output)] = loop_var
        if all(r.copies[-1].output is not None for r in row):  # a kept key or value
            self.extend([loop_var], [[r.copies[-1].output] for r in row], indent)

    def body(self, copies, indent: int, elem: str, loop_var: str) -> list[str]:
        """The loop body of a repetition (forward lines) and its modules' constructors."""
        elements: list[str] = []
        ctx = Ctx(collect=elements, ref=elem, var=loop_var)
        self.items([c.items for _, c in copies], [o for o, _ in copies], indent + 4, ctx)
        return elements

    def count(self, row: list[st.RepeatItem], occs: list[Occ]) -> str:
        cands = []
        for r, o in zip(row, occs, strict=True):
            code = o.source(r.count_code) if self.generic and r.count_code else None
            cands.append(([code] if code else []) + [str(r.count)])
        return choose(cands, "repeat counts")

    def loop_var(self, row: list[st.RepeatItem], occs: list[Occ]) -> str:
        """The variable the loop carries: the input's, unless that value is read again later
        or the spec names the result otherwise (`hidden = embedded -> Layer * 12`: the loop
        carries `hidden`, started from `embedded`)."""
        occ, r = occs[0], row[0]
        start, out = r.copies[0].input, r.copies[-1].output
        var = occ.vars[id(start)]
        name = var
        if occ.uses.get(id(start), 0) > 1 or (r.hint and variable(r.hint) != var):
            hint = r.hint or (out.hint if out is not None else None)
            name = self.ns.create(variable(hint or "x"))
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
        """A repetition of several layers (or inside a sequence): their constructors in turn.
        Inside a sequence some instances may repeat it no times (`* (1 if t != 1 else 0)`):
        the layers come from those that build them, the count from all."""
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
            elements = _runs(elements, self.count(row, occs))
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
        code = occs[0].source(row[0].code)
        if code is None:
            raise NotGeneric("a condition on a dim without a constructor argument")
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


def _builds(items: list[st.Item]) -> bool:
    """Whether the items make any node or block instance."""
    return any(isinstance(i, st.OpItem | st.CallItem) for i in st.walk(items))


def _firsts(row: list[st.RepeatItem]) -> list[st.Copy]:
    return [r.copies[0] for r in row]


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
