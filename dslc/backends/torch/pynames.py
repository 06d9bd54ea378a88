"""Python names for what a spec names: every name the user writes reaches the generated module
either unchanged or renamed so that it is legal, follows PEP 8 (ruff's N rules) and shadows no
builtin and none of the names the module defines itself."""

from __future__ import annotations

import ast
import builtins
import json
import keyword
import re

# What the generated module defines or imports at its top level.
MODULE_NAMES = frozenset(
    "torch nn F math INPUTS OUTPUTS TARGETS TOKENS LOSS_INPUTS METRICS TRAINING Loss "
    "create_model create_loss create_optimizer create_scheduler penalty SCHEDULE_STEPS".split()
)
RESERVED = frozenset(vars(builtins)) | MODULE_NAMES | {"self", "super"}


def variable(name: str) -> str:
    """A legal lower-case local name for a spec name: `X` -> `x`, `next` -> `next_`."""
    base = re.sub(r"\W", "_", name)
    if base.startswith("__") and base.endswith("__"):
        base = base.strip("_") + "_"
    base = base.lower() or "x"
    if base[0].isdigit():
        base = "v_" + base
    if keyword.iskeyword(base) or keyword.issoftkeyword(base) or base in RESERVED:
        base += "_"
    return base


def class_name(name: str) -> str:
    """CapWords for a block or model name: `tiny_gpt` -> `TinyGpt`; `ResNet18` is kept."""
    parts = [p for p in re.split(r"[\W_]+", name) if p]
    base = "".join(p[0].upper() + p[1:] for p in parts) or "Model"
    if base[0].isdigit():
        base = "M" + base
    return base


class _Legal(ast.NodeTransformer):
    """A spec expression's names as the class's arguments are called, strings in double
    quotes (as ruff format writes them)."""

    def visit_Name(self, node: ast.Name) -> ast.AST:  # noqa: N802 (ast's method name)
        return ast.Name(variable(node.id), node.ctx)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:  # noqa: N802
        if isinstance(node.value, str):
            return ast.Name(json.dumps(node.value), ast.Load())
        return node


def python(code: str) -> str:
    """The Python source of a spec expression kept in the IR (`width * 4`, `stride != 1`)."""
    return ast.unparse(_Legal().visit(ast.parse(code, mode="eval")).body)
