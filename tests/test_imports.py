"""Imports (dslc/frontend/imports.py): files imported relative to the importing file, the
library as std.NAME, a diamond loaded once, and the errors an import graph can hold, each at
the import line that caused it (the goldens tests/errors/import_*.dl hold the rendered ones).
A hostile graph is refused at the limits of ir/limits (docs/limits.md) without hanging."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

import dslc
from dslc.ir import limits

MODEL = "model M {{\n    input x: f32[N, 4]\n    output y = x -> {call}\n}}\n"


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")


def errors(path: Path) -> list[str]:
    with pytest.raises(dslc.CompileError) as info:
        dslc.load(path)
    return info.value.diagnostics.render().split("\n")


def block(name: str, body: str = "x -> relu") -> str:
    return f"block {name} {{\n    input x\n    output y = {body}\n}}\n"


def test_a_diamond_is_loaded_once(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "main.dl": 'import "left.dl"\nimport "right.dl"\n' + MODEL.format(call="L -> R"),
            "left.dl": 'import "shared/base.dl"\n' + block("L", "x -> Base"),
            "right.dl": 'import "shared/base.dl"\n' + block("R", "x -> Base"),
            "shared/base.dl": "k = 4\n" + block("Base", "x -> linear(k)"),
        },
    )
    spec = dslc.load(tmp_path / "main.dl")
    assert spec.param_count == 2 * (4 * 4 + 4)
    assert spec.torch_source().count("class Base(nn.Module)") == 1


def test_imports_resolve_against_the_importing_files_folder(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "specs/main.dl": 'import "../lib/a.dl"\n' + MODEL.format(call="A"),
            "lib/a.dl": 'import "deeper/b.dl"\n' + block("A", "x -> B"),
            "lib/deeper/b.dl": block("B", "x -> linear(3)"),
        },
    )
    assert dslc.load(tmp_path / "specs/main.dl").param_count == 15


def test_constants_of_an_imported_file_are_visible(tmp_path: Path) -> None:
    write(tmp_path, {"m.dl": 'import "c.dl"\n' + MODEL.format(call="linear(w)"), "c.dl": "w = 7\n"})
    assert dslc.load(tmp_path / "m.dl").param_count == 35


def test_a_constant_defined_in_two_files_is_an_error_at_the_import(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"m.dl": 'w = 3\nimport "c.dl"\n' + MODEL.format(call="linear(w)"), "c.dl": "w = 7\n"},
    )
    (first, *_) = errors(tmp_path / "m.dl")
    assert first.endswith(
        f":2:1: error: constant 'w' is defined in two files: {tmp_path.as_posix()}/m.dl:1 "
        f"and {tmp_path.as_posix()}/c.dl:1"
    )


def test_a_file_importing_itself_is_a_cycle(tmp_path: Path) -> None:
    write(tmp_path, {"m.dl": 'import "m.dl"\n' + MODEL.format(call="relu")})
    (first, *_) = errors(tmp_path / "m.dl")
    assert first.endswith(
        f"error: import cycle: {tmp_path.as_posix()}/m.dl -> {tmp_path.as_posix()}/m.dl"
    )


def test_a_folder_or_a_device_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.dl").mkdir()
    imports = 'import "dir.dl"\n' + (
        f'import "{os.devnull}"\n' if os.path.exists(os.devnull) else ""
    )
    write(tmp_path, {"m.dl": imports + MODEL.format(call="relu")})
    lines = [line for line in errors(tmp_path / "m.dl") if ": error: " in line]
    assert all("is not a file" in line for line in lines) and len(lines) == imports.count("\n")


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "latin1.dl").write_bytes(b"# caf\xe9\n")
    write(tmp_path, {"m.dl": 'import "latin1.dl"\n' + MODEL.format(call="relu")})
    assert (
        "cannot import " in errors(tmp_path / "m.dl")[0]
        and "not UTF-8" in errors(tmp_path / "m.dl")[0]
    )


def test_many_files_are_refused_at_the_import_past_the_limit(tmp_path: Path) -> None:
    n = limits.MAX_SOURCE_FILES + 5
    files = {f"f{i}.dl": f'import "f{i + 1}.dl"\n' for i in range(n)}
    files[f"f{n}.dl"] = ""
    files["m.dl"] = 'import "f0.dl"\n' + MODEL.format(call="relu")
    write(tmp_path, files)
    start = time.perf_counter()
    (first, *_) = errors(tmp_path / "m.dl")
    assert time.perf_counter() - start < 5
    assert f"more than {limits.MAX_SOURCE_FILES} files, beyond dslc's limit" in first


def test_a_wide_graph_of_large_files_is_refused_by_the_total(tmp_path: Path) -> None:
    """Each file within the one-file limits; together beyond the total, refused before all are
    parsed."""
    big = "# padding\n" * (limits.MAX_SOURCE_LINES - 10)
    n = limits.MAX_TOTAL_SOURCE_LINES // limits.MAX_SOURCE_LINES + 2
    files = {f"b{i}.dl": big for i in range(n)}
    files["m.dl"] = "".join(f'import "b{i}.dl"\n' for i in range(n)) + MODEL.format(call="relu")
    write(tmp_path, files)
    text = "\n".join(errors(tmp_path / "m.dl"))
    assert "the spec and its imports hold" in text and "beyond dslc's limit" in text


def test_an_imported_file_beyond_the_one_file_limit_is_refused_in_that_file(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "m.dl": 'import "long.dl"\n' + MODEL.format(call="relu"),
            "long.dl": "\n" * limits.MAX_SOURCE_LINES,
        },
    )
    (first, *_) = errors(tmp_path / "m.dl")
    assert first.startswith(
        f"{tmp_path.as_posix()}/long.dl:{limits.MAX_SOURCE_LINES + 1}:1: error: the spec has"
    )


def test_a_spec_from_a_string_imports_relative_to_the_current_folder(tmp_path, monkeypatch) -> None:
    write(tmp_path, {"lib.dl": block("Lib", "x -> linear(2)")})
    monkeypatch.chdir(tmp_path)
    assert dslc.compile_source('import "lib.dl"\n' + MODEL.format(call="Lib")).param_count == 10


def test_outputs_do_not_depend_on_where_dslc_is_installed() -> None:
    """The library shows as <std>/ in every output: no absolute path of the install."""
    spec = dslc.load(ROOT / "specs" / "hybrid_classifier.dl")
    install = str(Path(dslc.__file__).resolve().parent)
    texts = [spec.ir_text(), spec.torch_source(), str(spec.onnx_model())]
    assert "<std>/vision.dl:" in texts[0]
    assert not any(install in t for t in texts)


def test_the_library_compiles_through_the_command_line_from_any_folder(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "m.dl": "import std.vision\n"
            + MODEL.format(call="relu")
            .replace("f32[N, 4]", "f32[N, 8, 4, 4]")
            .replace("relu", "SqueezeExcitation(2)")
        },
    )
    r = subprocess.run(
        [sys.executable, "-m", "dslc", "check", "m.dl"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"m.dl: ok: model M, {(8 * 2 + 2) + (2 * 8 + 8)} parameters\n"
