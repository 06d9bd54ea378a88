"""The structure half of elaboration: call sites' arguments as Python source, and the
repetitions, named sequences and tensor-valued conditions of a definition, each recorded as an
item of its block instance (dslc/ir/structure.py) as the Evaluator expands it."""

from __future__ import annotations

from typing import Any

from dslc.frontend import ast
from dslc.ir import structure as st
from dslc.ir.graph import Value
from dslc.lower import codes
from dslc.lower.binding import Arg
from dslc.lower.evaluate import Evaluator
from dslc.lower.names import key as site_key
from dslc.lower.names import module_sites
from dslc.lower.scope import Frame, Scope


class Structure(Evaluator):
    """Supplied by the Elaborator: the instance paths it names (`instances`) and the name of
    the statement being elaborated (`hint`)."""

    instances: dict[str, str]
    hint: str

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
            item = st.RepeatItem("", n, code, sequential=True, hint=self.hint)

            def within(i: int) -> Frame:
                return frame.within(frame.path, seq=frame.seq)
        else:
            site = named or site_key(stage.span)
            container = frame.path + frame.sites.names.get(site, frame.sites.auto("layer"))
            several = module_sites(stage.stage, set(self.blocks)) > 1
            item = st.RepeatItem(
                container.rsplit(".", 1)[-1], n, code, sequential=several, hint=self.hint
            )
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
