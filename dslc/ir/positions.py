"""The rules ops declare how they move the positions of a sequence by (OpDef.positions), for
a decoder with a cache (ir/causal.py, whose Flow runs them over a graph). Each axis of a value
is not along the sequence (None), along the new positions of a step (NEW) or along every
position so far (ALL); a rule gives an op's outputs' axes from its inputs' and refuses, at the
op, what a step cannot compute from the new positions and the kept keys and values."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from dslc.diagnostics import SpecError

if TYPE_CHECKING:
    from dslc.ir.graph import Node, Value

NEW, ALL = "new", "all"
# Scores (..., NEW, ALL) are causal while each query's later keys are HIDDEN (-inf, from
# causal_mask) or, once a softmax has run along the keys, ZERO: only then may an op mix them.
HIDDEN, ZERO = "hidden", "zero"
Axes = tuple[str | None, ...]  # per axis of a value: None, NEW or ALL
MIXES = "a decoder step sees only the new positions and the cached keys and values of attention"


class Rules:
    """What the rules read (each value's axes, the scores that passed causal_mask, the values
    that are another's axes moved) and say; Flow (causal.py) keeps them and caches."""

    axes: dict[int, Axes]
    masked: dict[int, str]  # scores that are causal: HIDDEN or ZERO
    moved: dict[int, tuple[Value, tuple[int, ...]]]

    def cache(self, node: Node, v: Value, axis: int, kind: str) -> Axes:
        raise NotImplementedError

    def of(self, v: Value) -> Axes:
        return self.axes.get(id(v), (None,) * v.type.rank)

    def along(self, v: Value) -> bool:
        """Whether v has an axis along the sequence."""
        return any(self.of(v))

    def refuse(self, node: Node, why: str, hint: str | None = None) -> NoReturn:
        raise SpecError(
            f"--kv-cache cannot serve {node.op.name}: {why}",
            hint=hint
            or "a decoder step sees only the new positions and the cached keys and "
            "values; compile without --kv-cache",
            span=node.span,
        )

    # ---- the rules
    def same(self, node: Node, keeps: str | None = None) -> Axes:
        """Elementwise: every input's axes, aligned from the last (broadcast). Causal scores
        stay so only through what `keeps` says the op is: "identity" (dropout), "add" (-inf
        plus a number), "sub" (-inf minus one), "mul" (zero times one), "div" (zero over one);
        any other op may turn a hidden key into a seen one (relu(-inf) is 0)."""
        out = self.broadcast(node, [self.of(v) for v in node.inputs], node.output.type.rank)
        self._keep(node, keeps)
        return out

    def broadcast(self, node: Node, inputs: list[Axes], rank: int) -> Axes:
        """The axes of `rank` that inputs aligned from the last give; NEW against ALL at one
        axis is refused."""
        out: list[str | None] = [None] * rank
        for roles in inputs:
            for i, role in enumerate(reversed(roles)):
                at = rank - 1 - i
                if role and out[at] and out[at] != role:
                    self.refuse(node, "it combines new positions with every position so far")
                out[at] = out[at] or role
        return tuple(out)

    def _keep(self, node: Node, keeps: str | None) -> None:
        states = [self.masked.get(id(v)) for v in node.inputs]
        holding = [st for v, st in zip(node.inputs, states, strict=True) if ALL in self.of(v)]
        first = states[0]
        if keeps == "identity" or (keeps == "add" and set(holding) == {HIDDEN}):
            state = first if keeps == "identity" else HIDDEN
        elif keeps == "sub" and first == HIDDEN and holding == [HIDDEN]:
            state = HIDDEN
        elif (keeps == "mul" and ZERO in states) or (keeps == "div" and first == ZERO):
            state = ZERO
        else:
            return
        if state is not None:
            self.masked.update((id(o), state) for o in node.outputs)

    def mixes(self, node: Node, axes, softmax: bool = False) -> Axes:
        """The op mixes its first input along `axes` and keeps its other axes: right along
        none of the sequence; along every position so far only as a softmax of scores whose
        later keys are hidden (-inf), which gives them weight zero."""
        x = node.inputs[0]
        roles = self.of(x)
        mixed = [roles[a % len(roles)] for a in axes]
        for role in mixed:
            self.mixing(node, x, role, HIDDEN if softmax else None)
        if softmax and ALL in mixed:
            self.masked.update((id(o), ZERO) for o in node.outputs)
        return roles

    def mixing(self, node: Node, x: Value, role: str | None, needs: str | None) -> None:
        """x mixed along an axis of this role; along ALL, x's later keys must be `needs`."""
        if role == NEW:
            self.refuse(node, "it mixes the new positions with each other", MIXES)
        if role == ALL and (needs is None or self.masked.get(id(x)) != needs):
            self.refuse(
                node,
                "it lets each position see later ones: the scores are not causally masked",
                "mask the scores first, then mix the keys only by a softmax and a matmul "
                "with the values: `scores -> causal_mask -> softmax`",
            )

    def reduces(self, node: Node, axes: tuple[int, ...], keep: bool) -> Axes:
        roles = self.mixes(node, axes)
        gone = {a % len(roles) for a in axes}
        return tuple(None if i in gone else r for i, r in enumerate(roles) if keep or i not in gone)

    def moves(self, node: Node, perm: tuple[int, ...]) -> Axes:
        """Output axis i is input axis perm[i]."""
        roles = self.of(node.inputs[0])
        self._keep(node, "identity")
        self.moved[id(node.output)] = (node.inputs[0], perm)
        return tuple(roles[p] for p in perm)

    def reshapes(self, node: Node) -> Axes:
        """A reshape keeps a sequence axis where it stays its own dim with the same dims
        before it ((N, T, C) -> (N, T, H, C / H)); anything else moves positions."""
        x, out = node.inputs[0].type, node.output.type
        roles = self.of(node.inputs[0])
        result: list[str | None] = [None] * out.rank
        for a, role in enumerate(roles):
            if role is None:
                continue
            at = [i for i in range(out.rank) if out.shape[: i + 1] == x.shape[: a + 1]]
            if len(at) != 1 or sum(map(bool, roles)) > 1:
                self.refuse(node, "it moves positions along the sequence into other dims", MIXES)
            result[at[0]] = role
        return tuple(result)

    def inserts(self, node: Node, axis: int) -> Axes:
        """A new axis of size 1 at `axis` (negative: counted in the output)."""
        roles = list(self.of(node.inputs[0]))
        roles.insert(axis % node.output.type.rank, None)
        return tuple(roles)

    def appends(self, node: Node) -> Axes:
        """New trailing axes (an embedding's vectors)."""
        roles = self.of(node.inputs[0])
        return (*roles, *[None] * (node.output.type.rank - len(roles)))

    def cuts(self, node: Node, axis: int) -> Axes:
        """Split or join along `axis`, which must not be the sequence's."""
        if any(self.of(v)[axis % v.type.rank] for v in node.inputs):
            self.refuse(node, "it cuts or joins along the sequence", MIXES)
        return self.same(node)

    def removes(self, node: Node, axis: int) -> Axes:
        """A squeezed axis of size 1, never the sequence's."""
        roles = list(self.of(node.inputs[0]))
        del roles[axis % len(roles)]
        return tuple(roles)

    def picks(self, node: Node, items: list[str]) -> Axes:
        """A subscript, per leading input axis "all" (a whole slice), "one" (an integer: the
        axis goes) or "part" (a slice of it): right on any axis but the sequence's."""
        roles = self.of(node.inputs[0])
        out = []
        for i, role in enumerate(roles):
            item = items[i] if i < len(items) else "all"
            if role and item != "all":
                self.refuse(
                    node,
                    "it picks positions of the sequence, and a step has only the new ones",
                    "pick positions from the model's output: its logits are (N, T, ...)",
                )
            if item != "one":
                out.append(role)
        self._keep(node, "identity")
        return tuple(out)

    def masks(self, node: Node) -> Axes:
        """causal_mask: scores (..., NEW, ALL) hide each query's later keys."""
        roles = self.of(node.inputs[0])
        if any(roles) and roles[-2:] != (NEW, ALL):
            self.refuse(node, "its input is not scores of new queries over every key so far")
        self.masked[id(node.output)] = HIDDEN
        return roles

    def multiplies(self, node: Node) -> Axes:
        """matmul (..., M, K) @ (..., K, L): queries times keys make scores (the keys' side is
        cached, L holds every position), weights times values mix them (the values' side is
        cached, K holds every position, and the weights' later keys must have weight zero)."""
        a, b = node.inputs
        ra, rb = self.of(a), self.of(b)
        if ra[-1] == NEW and rb[-2] == NEW:
            self.refuse(node, "it sums over the new positions", MIXES)
        if ra[-1] == ALL and rb[-2] == NEW:
            rb = self.cache(node, b, -2, "value")
        elif ra[-1] == NEW and rb[-2] == ALL:
            ra = self.cache(node, a, -1, "value")
        if ra[-1] or rb[-2]:
            scores = a if NEW in ra else b
            self.mixing(node, scores, ALL, ZERO)
        if ra[-2] == NEW and rb[-1] == NEW:
            rb = self.cache(node, b, -1, "key")
        batch = self.broadcast(node, [ra[:-2], rb[:-2]], node.output.type.rank - 2)
        return (*batch, ra[-2], rb[-1])

    def attends(self, node: Node, causal: bool) -> Axes:
        """Attention over heads already split, q (N, H, T, E), k and v (N, H, S, E): with keys
        along the sequence it must be causal, and its keys and values are cached."""
        q, k, v = node.inputs[:3]
        if not self.along(k) and not self.along(v):
            return self.of(q)  # queries over a memory: position by position
        if not causal:
            self.noncausal(node)
        if len(node.inputs) > 3 and self.along(node.inputs[3]):
            self.error(node, f"--kv-cache does not support a padding mask on {node.op.name}")
        self.cache(node, k, 2, "key")
        self.cache(node, v, 2, "value")
        return self.of(q)

    def queries(self, node: Node) -> Axes:
        """Cross-attention: per query, over a memory that is not along the sequence."""
        if any(self.along(v) for v in node.inputs[1:]):
            self.refuse(node, "its memory is along the sequence", MIXES)
        return self.of(node.inputs[0])

    def noncausal(self, node: Node) -> NoReturn:
        self.error(
            node,
            "--kv-cache needs causal attention: this layer lets each position see later ones",
            "a cache serves a decoder: `attention(heads, causal=true)`",
        )

    def error(self, node: Node, message: str, hint: str | None = None) -> NoReturn:
        raise SpecError(
            message, hint=hint or "compile without --kv-cache, or drop the mask", span=node.span
        )

    def undeclared(self, node: Node) -> Axes | list[Axes]:
        """The default: an op that never sees the sequence needs no rule."""
        if any(self.along(v) for v in node.inputs):
            self.refuse(node, "dslc does not know how it treats the positions of a sequence")
        return [(None,) * v.type.rank for v in node.outputs]
