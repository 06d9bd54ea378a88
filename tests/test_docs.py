"""The documentation stays true: docs/ops.md is what dslc.tools.docgen generates from the registry,
and every complete spec shown in docs/language.md compiles. A deliberately wrong example belongs
in a ```text block, which is not compiled."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import dslc
from dslc.ops import REGISTRY
from dslc.tools import docgen, stdlibdoc

ROOT = Path(__file__).resolve().parent.parent
OPS_MD = ROOT / "docs" / "ops.md"
STDLIB_MD = ROOT / "docs" / "stdlib.md"
LANGUAGE_MD = ROOT / "docs" / "language.md"
REGENERATE = "run `python -m dslc.tools.docgen docs/ops.md` (make docs) and commit the result"


def dl_blocks(path: Path) -> list[tuple[int, str]]:
    """(line of the opening fence, text) of every ```dl block in a Markdown file."""
    blocks, start, lines = [], None, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if start is None and line.strip() == "```dl":
            start, lines = number, []
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(lines) + "\n"))
            start = None
        elif start is not None:
            lines.append(line)
    assert start is None, f"{path.name}:{start}: unclosed ```dl block"
    return blocks


def complete_specs() -> list:
    """The ```dl blocks of language.md that define a model; fragments are not compiled alone."""
    return [
        # padded with blank lines, so that a diagnostic gives the line in language.md
        pytest.param("\n" * line + text, id=f"language.md:{line}")
        for line, text in dl_blocks(LANGUAGE_MD)
        if re.search(r"^\s*model\s+\w+", text, re.MULTILINE)
    ]


def test_ops_md_is_generated():
    assert OPS_MD.exists(), f"docs/ops.md is missing: {REGENERATE}"
    assert OPS_MD.read_text(encoding="utf-8") == docgen.render(), (
        f"docs/ops.md is stale: {REGENERATE}"
    )


def test_render_is_deterministic():
    assert docgen.render() == docgen.render()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_op_is_in_ops_md(name):
    text = OPS_MD.read_text(encoding="utf-8")
    assert f"### `{name}`" in text, f"op {name} is missing from docs/ops.md: {REGENERATE}"
    assert REGISTRY[name].example in text


def test_language_md_has_complete_specs():
    assert len(complete_specs()) >= 10, "docs/language.md lost its examples?"


@pytest.mark.parametrize("source", complete_specs())
def test_language_md_example_compiles(source):
    try:
        dslc.compile_source(source, "docs/language.md")
        return
    except dslc.CompileError as err:
        message = str(err)
    pytest.fail(f"an example in docs/language.md does not compile:\n{message}", pytrace=False)


def test_docgen_main_writes_the_file(tmp_path):
    out = tmp_path / "ops.md"
    assert docgen.main([str(out)]) == 0
    assert out.read_text(encoding="utf-8") == docgen.render()


def test_stdlib_md_is_generated():
    assert STDLIB_MD.read_text(encoding="utf-8") == stdlibdoc.render(), (
        "docs/stdlib.md is stale: run `python -m dslc.tools.stdlibdoc docs/stdlib.md`"
    )


def test_stdlib_md_lists_every_block_with_its_parameters():
    text = STDLIB_MD.read_text(encoding="utf-8")
    for path in sorted((ROOT / "dslc" / "stdlib").glob("*.dl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("block "):
                name = line.split()[1].split("(")[0]
                assert f"### `{name}`" in text, f"{name} is missing from docs/stdlib.md"
