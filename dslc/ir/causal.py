"""What a decoder keeps from one step to the next (`--kv-cache`): the positions of a sequence,
followed through the graph.

A decoder step runs the T new positions of a sequence whose P earlier positions ran before.
Each axis of each value is either not along the sequence (None), along the new positions only
(NEW: T long in a step), or along every position so far (ALL: P + T long). The model's inputs
hold NEW where their dims are the sequence dim (dim 1 of an input, a symbol). Each op declares
how it moves positions (OpDef.positions) with the rules of ir/positions.py; a position-wise op
keeps them where they are. Where an op needs earlier positions, two things can be right:

- the keys and values of attention, written by hand: that value is *cached*, the copy the
  decoder kept of its earlier positions going before it, so it is ALL from its definition on;
- a layer that keeps its own cache (the one-op attention).

Anything else that mixes positions (a mean over the sequence, a recurrent layer, a convolution
along time) is refused, since a step cannot compute it from the new positions. Scores
(..., NEW, ALL) must pass causal_mask before anything mixes their keys (a softmax, a matmul),
or a position would see later ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dslc.diagnostics import SpecError
from dslc.errors import DslcError
from dslc.ir.positions import ALL, MIXES, NEW, Axes, Rules

if TYPE_CHECKING:
    from dslc.ir.graph import Graph, Node, Value


@dataclass
class Entry:
    """One tensor the decoder keeps: a hand-written key or value (`value`, extended along
    `axis` right where `node` makes it), or, with `value` None, a layer's own (`node`, an
    attention op). `index` numbers the keys (and the values) in graph order: past.<index>.key."""

    node: Node
    value: Value | None
    axis: int
    kind: str  # "key" or "value"
    index: int


@dataclass
class Plan:
    """Everything a decoder with a cache differs in: the kept tensors in graph order, and the
    positional embeddings, which count from P."""

    entries: list[Entry]
    positional: list[Node]

    def extended(self) -> dict[int, Entry]:
        """The hand-written entries by id of their value."""
        return {id(e.value): e for e in self.entries if e.value is not None}

    def of_layer(self, node: Node) -> list[Entry]:
        return [e for e in self.entries if e.value is None and e.node is node]


def plan(graph: Graph) -> Plan:
    """The cache of a causal decoder: SpecError at an op it rules out, DslcError for a graph
    with nothing to cache. The sequence is dim 1 of an input: of the first whose sequence the
    graph can decode (an encoder-decoder's source comes first, the target after it)."""
    failed: SpecError | DslcError | None = None
    for time in sequence_dims(graph):
        try:
            return _plan(graph, time)
        except (SpecError, DslcError) as err:
            failed = failed or err
    assert failed is not None
    raise failed


def _plan(graph: Graph, time) -> Plan:
    """A value found to need the cache at one use is cached from its definition on, so the
    flow runs again until no new value is cached."""
    cached: dict[int, tuple[int, str]] = {}
    while True:
        flow = Flow(graph, time, dict(cached))
        flow.run()
        if flow.cached == cached:
            return flow.result()
        cached = flow.cached


@dataclass
class Flow(Rules):
    """One pass over the graph in order, with the rules ops declare their positions by."""

    graph: Graph
    time: object  # the sequence dim, a symbol
    cached: dict[int, tuple[int, str]]  # id(value) -> (axis, kind), from the passes before
    axes: dict[int, Axes] = field(default_factory=dict)
    masked: dict[int, str] = field(default_factory=dict)  # causal scores: HIDDEN or ZERO
    entries: list[Entry] = field(default_factory=list)
    positional: list[Node] = field(default_factory=list)
    moved: dict[int, tuple[Value, tuple[int, ...]]] = field(default_factory=dict)
    uses: dict[int, int] = field(default_factory=dict)

    def run(self) -> None:
        time = self.time
        for node in self.graph.nodes:
            for v in node.inputs:
                self.uses[id(v)] = self.uses.get(id(v), 0) + 1
        for v in self.graph.inputs:
            self.axes[id(v)] = tuple(NEW if d == time else None for d in v.type.shape)
        for node in self.graph.nodes:
            got = node.op.positions(node, self)
            for k, v in enumerate(node.outputs):
                axes = got[k] if isinstance(got, list) else got
                assert len(axes) == v.type.rank, (node.op.name, axes, v.type)
                self.axes[id(v)] = axes
                if id(v) in self.cached:
                    self._extend(node, v, *self.cached[id(v)])

    def result(self) -> Plan:
        """The plan, once a pass caches nothing new: its outputs per new position, and
        something to keep."""
        for name, v in self.graph.served.items():
            if ALL in self.axes.get(id(v), ()):
                raise DslcError(
                    f"--kv-cache: output {name} holds every position so far, not the new ones",
                    hint="a decoder's outputs are per position: (N, T, ...)",
                )
        if not self.entries:
            raise DslcError(
                f"--kv-cache: model {self.graph.name} ({self.graph.path}) has no causal attention, "
                "so there is no cache of keys and values to keep",
                hint="--kv-cache is for decoders with attention(heads, causal=true)",
            )
        return Plan(self.entries, self.positional)

    def _extend(self, node: Node, v: Value, axis: int, kind: str) -> None:
        axes = self.axes[id(v)]
        if not _one_new(axes, axis):
            self.refuse(node, "its keys or values are not one tensor per new position")
        self.axes[id(v)] = (*axes[:axis], ALL, *axes[axis + 1 :])
        index = sum(e.kind == kind for e in self.entries)
        self.entries.append(Entry(node, v, axis, kind, index))

    def cache(self, node: Node, v: Value, axis: int, kind: str) -> Axes:
        """v's axis, a sequence axis of new positions, must hold every position: v is cached.
        Its axes with that axis ALL (the pass after this one sees it so from the start)."""
        axis %= v.type.rank
        axes = self.of(v)
        if axes[axis] == ALL:
            return axes
        if not _one_new(axes, axis):
            self.refuse(node, "it mixes the new positions with each other", MIXES)
        at, kept = axis, v
        while at != kept.type.rank - 2 and id(kept) in self.moved:  # (..., S, E) where it can
            source, perm = self.moved[id(kept)]
            if self.uses.get(id(source)) != 1:
                break
            at, kept = perm[at], source
        if any(kept is x for x in self.graph.inputs):
            self.refuse(
                node,
                f"its {kind}s are the model's input {kept.name}, which the cache cannot extend",
                f"make the {kind}s with a layer, as attention does: `{kept.name} -> linear(...)`",
            )
        self.cached.setdefault(id(kept), (at, kind))
        return (*axes[:axis], ALL, *axes[axis + 1 :])

    def layer(self, node: Node) -> Axes:
        """An op that keeps its own keys and values (attention): its output is per position."""
        for kind in ("key", "value"):
            index = sum(e.kind == kind for e in self.entries)
            self.entries.append(Entry(node, None, 2, kind, index))
        return self.of(node.inputs[0])

    def counted(self, node: Node) -> Axes:
        """A positional embedding: per position, numbered from P in a step."""
        if self.along(node.inputs[0]):
            self.positional.append(node)
        return self.same(node)


def _one_new(axes: Axes, axis: int) -> bool:
    """Whether axis is the one sequence axis of a value, along the new positions: what a
    cache can extend."""
    return axes.count(NEW) == 1 and axes[axis] == NEW and ALL not in axes


def sequence_dims(graph: Graph) -> list:
    """The dims that may number positions: each input's dim 1 that is a symbol (T)."""
    dims = []
    for v in graph.inputs:
        d = v.type.shape[1] if v.type.rank >= 2 else None
        if d is not None and not isinstance(d, int) and d not in dims:
            dims.append(d)
    if not dims:
        raise DslcError(
            f"--kv-cache: model {graph.name} ({graph.path}) has no sequence to decode: no "
            "input has a symbolic dim 1 (as tokens: i64[N, T] has)",
            hint="--kv-cache is for decoders with causal attention over a sequence of any length",
        )
    return dims
