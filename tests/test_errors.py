"""Error cases: each tests/errors/<case>.dl is a spec with one realistic mistake (the comment on
its first line says which), and <case>.err is the exact stderr of

    dslc check tests/errors/<case>.dl

run from the repository root: the rendered diagnostics and the final `N error(s)` line.

After an intended change to a message, regenerate the .err files and review the diff:

    pytest tests/test_errors.py --update-golden
    git diff tests/errors/
"""

from __future__ import annotations

import difflib
import re
import time
from pathlib import Path

import pytest

import dslc
from dslc.cli import main
from dslc.diagnostics import CompileError, Diagnostics, Span
from dslc.frontend.parse import SYNTAX_ERRORS, parse

REPO = Path(__file__).resolve().parent.parent
ERRORS = REPO / "tests" / "errors"
CASES = sorted(p.stem for p in ERRORS.glob("*.dl"))
MIN_CASES = 16
TWO_ERRORS_CASE = "two_errors"


def _update_golden(request: pytest.FixtureRequest) -> bool:
    # `--update-golden` is registered in tests/conftest.py; without it the tests compare.
    return bool(request.config.getoption("--update-golden", default=False))


def _check(case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `dslc check tests/errors/<case>.dl` in-process from the repository root, so that paths
    in the messages are relative. Returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(REPO)
    capsys.readouterr()  # drop anything printed before
    code = main(["check", f"tests/errors/{case}.dl"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _diff(expected: str, actual: str, golden: str) -> str:
    lines = difflib.unified_diff(
        expected.splitlines(keepends=True),
        actual.splitlines(keepends=True),
        fromfile=golden,
        tofile="actual stderr",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


@pytest.mark.parametrize("case", CASES)
def test_error_case(case: str, request, monkeypatch, capsys) -> None:
    code, out, err = _check(case, monkeypatch, capsys)
    assert "Traceback" not in out + err, f"dslc crashed on tests/errors/{case}.dl:\n{err}"
    assert code != 2, f"internal error (exit 2) on tests/errors/{case}.dl:\n{err}"
    assert code == 1, f"expected exit code 1 (a user error), got {code}\nstdout:\n{out}\n{err}"
    assert out == "", f"an error run should print nothing on stdout, got:\n{out}"
    golden = ERRORS / f"{case}.err"
    if _update_golden(request):
        golden.write_text(err, encoding="utf-8")
        return
    assert golden.exists(), f"{golden.name} is missing: run pytest with --update-golden"
    expected = golden.read_text(encoding="utf-8")
    if err != expected:
        rel = golden.relative_to(REPO).as_posix()
        pytest.fail(f"stderr differs from {rel}:\n{_diff(expected, err, rel)}", pytrace=False)


@pytest.mark.parametrize("case", CASES)
def test_case_starts_with_comment(case: str) -> None:
    first = (ERRORS / f"{case}.dl").read_text(encoding="utf-8").splitlines()[:1]
    assert first and first[0].startswith("#") and first[0].strip("# "), (
        f"tests/errors/{case}.dl: line 1 must be a comment saying what the mistake is"
    )


def test_enough_cases() -> None:
    assert len(CASES) >= MIN_CASES, f"only {len(CASES)} error cases in tests/errors/"


def test_every_golden_file_has_a_case() -> None:
    orphans = sorted(p.name for p in ERRORS.glob("*.err") if p.stem not in CASES)
    assert not orphans, f".err files without a .dl case: {orphans}"


def test_two_errors_reported_in_one_run(monkeypatch, capsys) -> None:
    code, _, err = _check(TWO_ERRORS_CASE, monkeypatch, capsys)
    assert code == 1
    headers = [line for line in err.splitlines() if ": error: " in line]
    assert len(headers) == 2, f"expected 2 diagnostics, got {len(headers)}:\n{err}"
    assert headers[0].split(":")[1] != headers[1].split(":")[1], "both on the same line"
    assert err.rstrip().endswith("\n2 errors"), err


# ---- the table of friendly syntax errors


def _syntax_examples() -> list:
    return [
        pytest.param(label, example, id=f"{i}-{j}")
        for i, (label, examples) in enumerate(SYNTAX_ERRORS.items())
        for j, example in enumerate(examples)
    ]


def _parse_error(source: str) -> str:
    diags = Diagnostics(source)
    program = parse(source, "example.dl", diags)
    assert program is None, f"{source!r} parses; it no longer shows a syntax error"
    assert len(diags.items) == 1, diags.render()
    return diags.items[0].message


@pytest.mark.parametrize(("label", "example"), _syntax_examples())
def test_syntax_error_table(label: str, example: str) -> None:
    """Every example in SYNTAX_ERRORS gives a diagnostic starting with its label."""
    message = _parse_error(example)
    assert message.startswith(label), f"{example!r}\n  gave: {message}\n  want: {label}"


def test_syntax_error_table_after_an_earlier_statement() -> None:
    """The same mistakes, one statement further into the body, get the same labels."""
    prefix = "model M { "
    misses = []
    for label, examples in SYNTAX_ERRORS.items():
        for example in examples:
            if not example.startswith(prefix):
                continue
            source = prefix + "input x0: f32[N, 2]\n    " + example[len(prefix) :]
            message = _parse_error(source)
            if not message.startswith(label):
                misses.append(f"{source!r}\n  gave: {message}\n  want: {label}")
    assert not misses, "\n".join(misses)


# ---- colour, literals beyond their range, errors about the whole file, many errors

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.parametrize("case", CASES)
def test_colour_changes_no_text(case: str) -> None:
    """The coloured rendering is the plain one (the goldens) with escape codes added."""
    diags = dslc.check(ERRORS / f"{case}.dl")
    coloured = diags.render(color=True)
    assert "\x1b[1;31merror:\x1b[0m" in coloured
    assert ANSI.sub("", coloured) == diags.render()


def _errors(source: str) -> list[str]:
    """The rendered diagnostics of compiling `source` as x.dl."""
    with pytest.raises(CompileError) as info:
        dslc.compile_source(source, "x.dl")
    return [d.render(source) for d in info.value.diagnostics.items]


def test_an_integer_literal_of_5000_digits_is_a_located_error() -> None:
    (error,) = _errors(
        "model M {\n  input x: f32[N, 2]\n  output y = x -> linear(" + "9" * 5000 + ")\n}"
    )
    assert error.startswith(
        "x.dl:3:26: error: integer literal of 5,000 digits is too large: "
        "the largest is 2**63 - 1 = 9223372036854775807\n"
    )


def test_the_largest_integer_literal_is_accepted() -> None:
    program = "model M {{ input x: f32[N, 2]  k = {}  output y = x -> relu }}"
    dslc.compile_source(program.format(2**63 - 1))
    (error,) = _errors(program.format(2**63))
    assert "integer literal 9223372036854775808 is too large" in error


def test_a_float_literal_beyond_float64_is_a_located_error() -> None:
    (error,) = _errors("model M {\n  input x: f32[N, 2]\n  k = -1e400\n  output y = x -> relu\n}")
    assert error.startswith("x.dl:3:8: error: number literal 1e400 is beyond float64's range")


def test_a_file_without_a_model_points_at_its_first_line() -> None:
    (error,) = _errors("# nothing but a constant\nwidth = 3\n")
    assert error.splitlines()[:3] == [
        "x.dl:1:1: error: the file defines no model",
        "    1 | # nothing but a constant",
        "      | ^",
    ]


def test_too_deep_nesting_points_at_the_deepest_statement() -> None:
    source = (
        "model M {\n  input x: f32[N, 4]\n  a = x -> relu\n"
        "  output y = a" + " -> relu" * 3000 + "\n}\n"
    )
    (error,) = _errors(source)
    assert error.startswith("x.dl:4:3: error: the spec nests expressions or pipelines too deeply")


def test_seen_is_a_lookup_by_place_and_message() -> None:
    diags = Diagnostics("")
    span = Span("x.dl", 1, 1, 1, 2)
    diags.error(span, "one")
    assert diags.seen(span, "one")
    assert not diags.seen(span, "two") and not diags.seen(None, "one")


MANY = 20_000


@pytest.mark.slow
def test_20000_errors_compile_and_render_in_linear_time() -> None:
    """Each line an independent error; quadratic reporting took minutes here. Measured against
    the same spec without the errors in the same run (about 2.5 s against 2 s on a two-core
    machine, most of it parsing), so that a loaded machine slows both alike."""

    def spec(left: str) -> str:  # ten statements a line: within the 20,000-line limit
        lines = "".join(
            f"  y{i} = {left} + {i}" + ("\n" if i % 10 == 9 else "") for i in range(MANY)
        )
        return "model M {\n  input x: f32[N, 2]\n" + lines + "  output z = x -> relu\n}\n"

    start = time.perf_counter()
    dslc.compile_source(spec("1"), "clean.dl")
    clean = time.perf_counter() - start
    start = time.perf_counter()
    with pytest.raises(CompileError) as info:
        dslc.compile_source(spec("true"), "many.dl")
    text = info.value.diagnostics.render()
    elapsed = time.perf_counter() - start
    assert len(info.value.diagnostics.items) == MANY
    assert text.count(": error: ") == MANY
    assert elapsed < 3 * clean + 1.0, f"{MANY} errors took {elapsed:.1f} s, clean {clean:.1f} s"


def test_rendering_many_diagnostics_splits_the_source_once() -> None:
    source = "".join(f"y{i} = nope\n" for i in range(MANY))
    diags = Diagnostics(source)
    for i in range(MANY):
        diags.error(Span("x.dl", i + 1, 1, i + 1, 3), "bad")
    tenth = Diagnostics("".join(f"y{i} = nope\n" for i in range(MANY // 10)))
    for i in range(MANY // 10):
        tenth.error(Span("x.dl", i + 1, 1, i + 1, 3), "bad")
    start = time.perf_counter()
    tenth.render()
    small = time.perf_counter() - start
    start = time.perf_counter()
    text = diags.render()
    # linear: about 10 times the tenth; splitting the source per error made it 100 times
    assert time.perf_counter() - start < 30 * small + 0.2
    assert text.count("\n") == 2 * MANY + MANY - 1


def test_an_error_on_a_huge_line_shows_the_part_around_it() -> None:
    """A spec line of a megabyte: the excerpt is at most 200 characters around the column, with
    the caret under the offending name (it printed the whole line before)."""
    pad = "x" + " " * 1_000_000
    source = f"model M {{ input x: f32[N, 4]  output y = {pad}-> nosuchlayer -> relu }}"
    with pytest.raises(CompileError) as info:
        dslc.compile_source(source, "wide.dl")
    text, caret = info.value.diagnostics.render().splitlines()[1:3]
    assert len(text) < 300 and "| ..." in text  # what comes before the column is cut
    at = caret.index("^")
    assert text[at : at + len("nosuchlayer")] == "nosuchlayer"
