"""`dslc summary`: the model as a table, as Keras' summary() and torchinfo print it. One row
per layer (name, op, output shape with symbolic dims, parameters, multiply-accumulates), block
instances as rows of their own with subtotals and their layers indented below, and totals.

MACs count one example (the batch dim left out) and only the ops that multiply by weights or by
another tensor (OpDef.macs), the convention of fvcore and of torchvision's published counts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dslc.ir.graph import Graph, Node
from dslc.ir.types import Dim, dim_add


@dataclass
class Row:
    depth: int
    name: str
    op: str
    shape: str
    params: int
    macs: Dim
    tied: bool = False  # shares a parameter of another layer (counted there)


def summarize(graph: Graph) -> str:
    rows = _rows(graph)
    name_w = max([len("Layer")] + [2 * r.depth + len(r.name) for r in rows])
    op_w = max([len("Op")] + [len(r.op) for r in rows])
    shape_w = max([len("Output shape")] + [len(r.shape) for r in rows])
    header = (
        f"{'Layer':<{name_w}}  {'Op':<{op_w}}  {'Output shape':<{shape_w}}  "
        f"{'Params':>12}  {'MACs':>9}"
    )
    rule = "-" * len(header)
    lines = [f"model {graph.name} ({graph.path})", rule, header, rule]
    for r in rows:
        name = "  " * r.depth + r.name
        lines.append(
            f"{name:<{name_w}}  {r.op:<{op_w}}  {r.shape:<{shape_w}}  "
            f"{_params_text(r):>12}  {_macs(r.macs):>9}"
        )
    return "\n".join([*lines, rule, *_totals(graph)]) + "\n"


def _rows(graph: Graph) -> list[Row]:
    """Layer rows in graph order, each block instance's row just before its first layer."""
    rows: list[Row] = []
    open_blocks: set[str] = set()
    for n in graph.nodes:
        parts = n.name.split(".")
        for depth in range(1, len(parts)):
            path = ".".join(parts[:depth])
            if path not in open_blocks:
                open_blocks.add(path)
                rows.append(_block_row(graph, path, depth - 1))
        shapes = ", ".join(v.type.shape_str() for v in n.outputs)
        macs = n.op.macs(n)
        rows.append(
            Row(len(parts) - 1, parts[-1], n.op.name, shapes, _params(n), macs, bool(n.tied()))
        )
    return rows


def _params_text(r: Row) -> str:
    if not r.tied:
        return _count(r.params)
    return f"{_count(r.params)} + tied" if r.params else "tied"


def _block_row(graph: Graph, path: str, depth: int) -> Row:
    inside = [n for n in graph.nodes if n.name.startswith(path + ".")]
    macs: Dim = 0
    for n in inside:
        macs = dim_add(macs, n.op.macs(n))
    last = inside[-1].outputs[0].type.shape_str()
    name = path.split(".")[-1]
    return Row(depth, name, graph.blocks.get(path, "block"), last, sum(map(_params, inside)), macs)


def _params(n: Node) -> int:
    return sum(math.prod(p.shape) for p in n.params.values() if not p.buffer)


def _totals(graph: Graph) -> list[str]:
    params = [p for _, p in graph.parameters()]
    frozen = sum(math.prod(p.shape) for p in params if not p.trainable)
    buffers = sum(math.prod(p.shape) for _, p in graph.parameters(buffers=True) if p.buffer)
    total = graph.param_count()
    macs: Dim = 0
    for n in graph.nodes:
        macs = dim_add(macs, n.op.macs(n))
    size = 4 * (total + buffers)  # parameters are float32
    lines = [
        f"Parameters: {total:,} ({total - frozen:,} trainable, {frozen:,} frozen)",
        f"Buffers: {buffers:,} (running statistics, not trained)" if buffers else "Buffers: 0",
        f"Weights in memory: {_bytes(size)} (float32)",
        f"MACs per example: {_macs(macs, exact=True)}",
    ]
    return lines


def _bytes(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.2f} KiB"


def _count(n: int) -> str:
    return f"{n:,}" if n else "-"


def _macs(m: Dim, exact: bool = False) -> str:
    if not isinstance(m, int):
        return str(m)
    if m == 0:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if m >= scale:
            short = f"{m / scale:.2f}{unit}"
            return f"{m:,} ({short})" if exact else short
    return f"{m:,}"
