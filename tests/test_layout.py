"""The package follows the pipeline and has no import cycles: module-level imports (those
that run, not the ones under `if TYPE_CHECKING:`) form a graph without cycles, and the
stages import only downwards (frontend and ir import no lowering, ops no backend, the
backends no runtime)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "dslc"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The dslc modules `path` imports when it is loaded (function bodies included: they run
    on first use, and a cycle there still ties the modules together)."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dslc"):
            # `from dslc.x import y`: the module dslc.x.y where y is one, else dslc.x
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("dslc")}
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    names = set(modules)
    return {
        m: {i for i in _imports(p, names) if i in modules and i != m} for m, p in modules.items()
    }


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def test_no_import_cycles_between_modules() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            cycle = path[path.index(m) :] + [m]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if m in done:
            return
        for dep in sorted(graph[m]):
            visit(dep, [*path, m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])


# What each stage may not import (the stages after it in the pipeline).
FORBIDDEN = {
    "dslc.frontend": ("dslc.lower", "dslc.ops", "dslc.backends", "dslc.runtime", "dslc.tools"),
    "dslc.ir": ("dslc.frontend", "dslc.lower", "dslc.backends", "dslc.runtime", "dslc.tools"),
    "dslc.ops": ("dslc.frontend", "dslc.lower", "dslc.backends", "dslc.runtime", "dslc.tools"),
    "dslc.lower": ("dslc.backends", "dslc.runtime", "dslc.tools"),
    "dslc.backends": ("dslc.runtime", "dslc.tools", "dslc.lower"),
}


def test_stages_import_only_downwards() -> None:
    wrong = [
        f"{m} imports {dep}"
        for m, deps in _graph().items()
        for dep in deps
        for stage, banned in FORBIDDEN.items()
        if _package(m) == stage and dep.startswith(banned)
    ]
    assert not wrong, wrong
