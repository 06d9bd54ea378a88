"""The op registry is the one home of every op: each is documented, and each is exercised by a
spec in specs/ (so it has goldens and a parity test)."""

from __future__ import annotations

import pytest
from conftest import SPECS

import dslc
from dslc.ir import check as ir
from dslc.ops import FAMILIES, REGISTRY
from dslc.ops.base import ALIASES


def used_ops() -> set[str]:
    used: set[str] = set()
    for path in SPECS:
        g = dslc.load(path).graph
        used |= {n.op.name for n in g.nodes}
        if g.training:
            used |= {t.op.name for t in g.training.loss + g.training.penalties}
            used |= {g.training.optimizer[0].name} if g.training.optimizer else set()
            used |= {g.training.schedule[0].name} if g.training.schedule else set()
    return used


def test_every_op_is_exercised_by_a_spec():
    missing = sorted(set(REGISTRY) - used_ops())
    assert not missing, f"ops with no spec in specs/ (add one, with goldens): {missing}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_op_is_documented(name):
    op = REGISTRY[name]
    assert op.family in FAMILIES
    assert op.doc and op.example, f"{name} needs doc and example (they feed docs/ops.md)"
    assert all(a.doc for a in op.attrs), f"{name}: every attribute needs a doc"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_types_rederive(path):
    """ir.verify re-runs every shape rule and checks the graph is well-formed."""
    ir.verify(dslc.load(path).graph)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_another_frameworks_name_points_to_the_op(alias: str) -> None:
    target = ALIASES[alias][0]
    assert target in REGISTRY
    with pytest.raises(dslc.CompileError) as err:
        dslc.compile_source(f"model M {{ input x: f32[N, 4, 8]  output y = x -> {alias} }}")
    assert f"did you mean '{target}'?" in (err.value.diagnostics.items[0].hint or "")
