"""The generated module's decoding with a cache of keys and values (ir/causal.py decides what
is kept): KVCache runs the model a few positions at a time, and each layer that keeps keys or
values (a `cache` attribute: SelfAttention, or a block whose attention the spec writes by hand)
puts the earlier positions' before the new ones with `self.cache.extend(x, dim)` (Past)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dslc.diagnostics import SpecError
from dslc.errors import DslcError
from dslc.ir import structure as st
from dslc.ir.causal import Plan, plan

if TYPE_CHECKING:
    from dslc.ir.graph import Graph

KV_CACHE = '''
class KVCache:
    """Runs a causal model a few positions at a time, keeping the keys and values of the
    positions seen so far in every layer that has a `cache`: after `cache(prompt)`,
    `cache(ids)` with the next ids (N, 1) costs one position, and gives what the model gives
    on the whole window. Positions are numbered after the cached ones; reset() empties it."""

    def __init__(self, model):
        self.model = model
        self.layers = [m for m in model.modules() if hasattr(m, "cache")]
        self.positions = [m for m in model.modules() if hasattr(m, "start")]
        self.reset()

    def reset(self):
        self.length, self.kept = 0, [[] for _ in self.layers]

    def __call__(self, tokens):
        for m, kept in zip(self.layers, self.kept, strict=True):
            m.cache = Past(kept)
        for m in self.positions:
            m.start = self.length
        try:
            out = self.model(tokens)
        finally:
            for m in self.layers:
                m.cache = None
            for m in self.positions:
                m.start = 0
        self.length += tokens.shape[1]
        return out


class Past:
    """One layer's tensors of the earlier positions while KVCache runs the model: each
    extend(x, dim) puts the next one before x along dim (the positions) and keeps the result
    for the next step."""

    def __init__(self, kept):
        self.kept, self.next = kept, 0

    def extend(self, x, dim):
        if self.next < len(self.kept):
            x = torch.cat([self.kept[self.next], x], dim=dim)
            self.kept[self.next] = x
        else:
            self.kept.append(x)
        self.next += 1
        return x
'''

# What a block whose attention the spec writes adds: a cache that KVCache sets while it runs.
CACHE_INIT = "self.cache = None"
CACHE_INIT_COMMENT = "set by KVCache while it decodes"


def decoder_plan(graph: Graph) -> Plan | None:
    """The model's cache (ir/causal.py), or None where it cannot decode with one. KVCache runs
    a model of one input, the sequence (a language model): an encoder-decoder's source would
    run again at every step, and its positions would count from the cached ones too (the
    ONNX decoder of `--kv-cache` takes it)."""
    if len(graph.inputs) != 1:
        return None
    try:
        found = plan(graph)
    except (SpecError, DslcError):
        return None
    unwritable = set().union(*(_inside(i.items) for i in graph.root.instances()))
    return None if any(id(e.value) in unwritable for e in found.entries) else found


def _inside(items: list[st.Item], within: bool = False) -> set[int]:
    """The values forward cannot extend where they are made: those made in an nn.Sequential,
    or in a loop's body but for the value it carries out (extended after the loop)."""
    out: set[int] = set()
    for item in items:
        if isinstance(item, st.OpItem) and within:
            out.update(id(v) for v in item.node.outputs)
        elif isinstance(item, st.RepeatItem):
            for copy in item.copies:
                out |= _inside(copy.items, True)
            last = item.copies[-1].output if item.copies else None
            if not (within or item.sequential) and last is not None:
                out.discard(id(last))
        elif isinstance(item, st.SeqItem):
            out |= _inside(item.items, True)
        elif isinstance(item, st.CondItem):
            out |= _inside(item.items, within)
    return out


def extend_lines(kept: list[tuple[str, int, str]], indent: int) -> list[tuple[int, str, str]]:
    """forward's lines after a statement that makes kept keys or values: (variable, the
    sequence's dim, "key" or "value") each."""
    kinds = sorted({kind for _, _, kind in kept})  # key, value
    what = " and ".join("keys" if k == "key" else "values" for k in kinds)
    return [
        (indent, "if self.cache is not None:", f"decoding: the earlier positions' {what} first"),
        *(
            (indent + 4, f"{var} = self.cache.extend({var}, dim={axis})", "")
            for var, axis, _ in kept
        ),
    ]
