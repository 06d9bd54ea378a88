"""Fuzzing the whole pipeline: .dl text -> diagnostics, or PyTorch source and an ONNX model.

Three sources of inputs, all drawn by hypothesis:
- whole files generated from the grammar (hypothesis.extra.lark), with names from a small pool
  of real op names, block names and variables, and small numbers;
- a model whose statements and output expression are generated from the grammar, so that more
  inputs get past the parser and the name lookups;
- every spec in specs/ with one token mutated (deleted, duplicated, swapped with the next, a
  number replaced by 0, -1 or 10**20, a name by another op's name).

Each input must end as a compiled spec or a `dslc.CompileError` / `dslc.DslcError`, never any
other exception; every diagnostic must point at a line and column (but for the few that are about
the whole file: DOCUMENTED_UNLOCATED); and each input must finish within TIME_LIMIT seconds.
The bounded run here is deterministic (derandomize); bench/fuzz.py runs the same checks on
20,000+ random inputs and prints the outcomes and the slowest inputs."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import hypothesis.strategies as st
import lark
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.extra.lark import from_lark

import dslc
from dslc.frontend.parse import parser
from dslc.ops.base import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
SPECS = {p.stem: p.read_text() for p in sorted((ROOT / "specs").glob("*.dl"))}
TIME_LIMIT = 5.0  # seconds per input, compile and backends together
ONNX_PARAMS = 2_000_000  # larger models skip ONNX export, to keep the memory low
# Diagnostics about the whole file rather than a place in it.
DOCUMENTED_UNLOCATED = (
    "the spec nests expressions or pipelines too deeply",  # a RecursionError, api.py
    "the file defines no model",  # elaborate.py: nowhere to point
)

OPS = sorted(REGISTRY)
NAMES = [*OPS, *("B", "Block", "x", "y", "h", "t", "a", "N", "T", "C", "width", "n")]
NAMES += ["f32", "i64", "f16", "int", "float", "bool", "str", "loss", "optimizer", "epochs"]
STRINGS = ['"same"', '"valid"', '"sinusoidal"', '"nearest"', '"bilinear"', '"mean"', '""']
FLOATS = ["0.5", "1e-3", "2.0", "0.1", "1e-5", ".5", "3.", "1e400"]
WHITE = [" ", "\n", "  ", "\t"]


def _pad(s: str) -> str:
    return f" {s} "


@cache
def grammar() -> lark.Lark:
    """Our grammar as a Lark object hypothesis can read: parser() is loaded from Lark's cache,
    which keeps no `.grammar`, so build an uncached one from the same source."""
    return lark.Lark(parser().source_grammar, parser="lalr")


def _explicit() -> dict[str, st.SearchStrategy[str]]:
    """Terminal strategies: a pool of names, small numbers; keywords and punctuation padded with
    spaces so that tokens never run together (`modelM`); comments always end their line."""
    out: dict[str, st.SearchStrategy[str]] = {
        "NAME": st.sampled_from(NAMES).map(_pad),
        "INT": st.one_of(st.integers(0, 16), st.sampled_from([32, 64, 256, 1000])).map(
            lambda n: _pad(str(n))
        ),
        "FLOAT": st.sampled_from(FLOATS).map(_pad),
        "STRING": st.sampled_from(STRINGS).map(_pad),
        "COMMENT": st.just(" # note\n"),
        "COMPARE": st.sampled_from(["==", "!=", "<", ">=", "<=", ">"]).map(_pad),
    }
    for t in grammar().terminals:
        if isinstance(t.pattern, lark.lexer.PatternStr):
            out[t.name] = st.just(_pad(t.pattern.value))
        elif t.name.startswith("__IGNORE"):
            out[t.name] = st.sampled_from(WHITE)
    return out


@cache
def _rule(start: str) -> st.SearchStrategy[str]:
    """Strings of one rule; hypothesis refuses strategies for terminals the rule never uses."""
    terminals, _, ignored = grammar().grammar.compile([start], ())
    used = {t.name for t in terminals} | set(ignored)
    explicit = {k: v for k, v in _explicit().items() if k in used}
    return from_lark(grammar(), start=start, explicit=explicit)


def grammar_files() -> st.SearchStrategy[str]:
    return _rule("start")


HEADS = ["input x: f32[N, 4]", "input x: f32[N, 3, 8, 8]", "input x: i64[N, T]"]
HEADS += ["input x: f32[N, 8, 16]", "input x: f32[N, 2, 4, 4, 4]"]


def templated_models() -> st.SearchStrategy[str]:
    """Models with an input, then statements, stages and blocks drawn from the grammar: more
    of them get past the parser and the name lookups than whole generated files do."""
    head = st.sampled_from(HEADS)
    body = st.lists(_rule("assign"), max_size=2).map("\n  ".join)
    plain = st.builds(
        lambda h, b, e: f"model M {{\n  {h}\n  {b}\n  output y = {e}\n}}", head, body, _rule("expr")
    )
    staged = st.builds(
        lambda h, a, b: f"model M {{\n  {h}\n  h = x -> {a}\n  output y = h -> {b}\n}}",
        head,
        _rule("stage"),
        _rule("stage"),
    )
    blocks = st.builds(
        lambda h, b, e: (
            f"block B(n: int = 2, w: float = 0.5) {{\n  input x\n  {b}\n  output y = {e}\n}}\n"
            f"model M {{\n  {h}\n  output y = x -> B -> B(3)\n}}"
        ),
        head,
        body,
        _rule("expr"),
    )
    return st.one_of(plain, staged, blocks)


MUTATIONS = ("delete", "duplicate", "swap", "zero", "minus_one", "huge", "rename")


@cache
def _tokens(name: str) -> list[lark.Token]:
    return list(grammar().lex(SPECS[name]))


def mutate(name: str, kind: str, index: int, op: str) -> str:
    """The spec `name` with one token mutated; numbers and names mutate the nearest number or
    name at or after `index`."""
    text, tokens = SPECS[name], _tokens(name)
    want = {"zero": "INT FLOAT", "minus_one": "INT FLOAT", "huge": "INT FLOAT", "rename": "NAME"}
    i = index % len(tokens)
    if kind in want:
        found = [j for j in range(len(tokens)) if tokens[j].type in want[kind].split()]
        i = min((j for j in found if j >= i), default=found[0])
    tok = tokens[i]
    start, end = tok.start_pos, tok.end_pos
    match kind:
        case "delete":
            return text[:start] + text[end:]
        case "duplicate":
            return text[:end] + " " + str(tok) + text[end:]
        case "swap" if i + 1 < len(tokens):
            nxt = tokens[i + 1]
            return (
                text[:start] + str(nxt) + text[end : nxt.start_pos] + str(tok) + text[nxt.end_pos :]
            )
        case "swap":
            return text
    new = {"zero": "0", "minus_one": "-1", "huge": "100000000000000000000", "rename": op}[kind]
    return text[:start] + new + text[end:]


def mutated_specs() -> st.SearchStrategy[str]:
    return st.builds(
        mutate,
        st.sampled_from(sorted(SPECS)),
        st.sampled_from(MUTATIONS),
        st.integers(0, 10_000),
        st.sampled_from(OPS),
    )


# ---- running one input


class Timeout(BaseException):
    """Raised by the alarm: a BaseException, so that no `except Exception` in dslc takes it."""


@dataclass
class Outcome:
    kind: str  # ok, ok-no-onnx, compile-error, dslc-error; failures: crash, timeout, unlocated
    seconds: float
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.kind in ("crash", "timeout", "unlocated")


def _alarm(signum, frame):
    raise Timeout()


def _backends(spec: dslc.Spec) -> str:
    source = spec.torch_source()
    compile(source, "<dslc fuzz>", "exec")  # valid Python; never executed
    if spec.param_count > ONNX_PARAMS:
        return "ok-no-onnx"
    spec.onnx_export()
    return "ok"


def _unlocated(err: dslc.CompileError) -> str | None:
    for d in err.diagnostics.items:
        located = d.span is not None and d.span.line >= 1 and d.span.column >= 1
        if not located and not any(m in d.message for m in DOCUMENTED_UNLOCATED):
            return d.render(None)
    return None


def run_input(text: str, limit: float = TIME_LIMIT) -> Outcome:
    """Compile `text` and run the backends on it, within `limit` seconds."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    # Again every 0.25 s after the first: an exception raised in a gc callback is swallowed.
    signal.setitimer(signal.ITIMER_REAL, limit, 0.25)
    start, detail = time.perf_counter(), ""
    try:
        kind, detail = _backends(dslc.compile_source(text, "fuzz.dl")), ""
    except dslc.CompileError as err:
        detail = _unlocated(err) or ""
        kind = "unlocated" if detail else "compile-error"
    except dslc.DslcError as err:
        kind, detail = "dslc-error", err.message
    except Timeout:
        kind = "timeout"
    except Exception as err:  # any other exception is the finding
        kind, detail = "crash", f"{type(err).__name__}: {err}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return Outcome(kind, time.perf_counter() - start, detail)


@dataclass
class Tally:
    """Outcomes of a run, and its slowest inputs (bench/fuzz.py prints them)."""

    counts: Counter = field(default_factory=Counter)
    slowest: list[tuple[float, str]] = field(default_factory=list)
    failures: list[tuple[Outcome, str]] = field(default_factory=list)

    def add(self, outcome: Outcome, text: str, keep: int = 10) -> None:
        self.counts[outcome.kind] += 1
        self.slowest = sorted([*self.slowest, (outcome.seconds, text)], reverse=True)[:keep]
        if outcome.failed:
            self.failures.append((outcome, text))


def fuzz_test(
    strategy: st.SearchStrategy[str],
    examples: int,
    tally: Tally | None = None,
    strict: bool = True,
    **options,
) -> Callable[[], None]:
    """A hypothesis test of `examples` inputs: each must not fail (see Outcome.failed). With
    strict=False failures are only tallied, and the run goes on (bench/fuzz.py)."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        **({"derandomize": True} | options),
    )
    @given(strategy)
    def check(text: str) -> None:
        outcome = run_input(text)
        if tally is not None:
            tally.add(outcome, text)
        assert not (strict and outcome.failed), (
            f"{outcome.kind}: {outcome.detail}\n--- input:\n{text}"
        )

    return check


# ---- the bounded run of the normal suite: 2,700 inputs, about 40 s on one core. Drawing from
# the grammar is hypothesis's slow part (some 50 ms an input, against 3 ms to compile one).


def test_fuzz_grammar_files():
    fuzz_test(grammar_files(), 300)()


def test_fuzz_templated_models():
    fuzz_test(templated_models(), 400)()


def test_fuzz_mutated_specs():
    fuzz_test(mutated_specs(), 2000)()


def test_mutations_change_the_spec():
    """The mutator does what it says, so the run above tests what it claims to."""
    assert mutate("xor", "zero", 0, "relu") != SPECS["xor"]
    assert "100000000000000000000" in mutate("xor", "huge", 0, "relu")
    renamed = mutate("xor", "rename", 0, "conv2d")
    assert "conv2d" in renamed and "conv2d" not in SPECS["xor"]
    assert len(mutate("xor", "delete", 3, "relu")) < len(SPECS["xor"])


def test_a_hang_is_a_timeout_not_a_hang(monkeypatch):
    def forever(*_args, **_kwargs):
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(dslc, "compile_source", forever)
    assert run_input("model M {}", limit=0.2).kind == "timeout"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DSLC_FUZZ_LONG"), reason="set DSLC_FUZZ_LONG=1")
def test_fuzz_long():
    """The long run, as bench/fuzz.py does it, some 8 minutes: DSLC_FUZZ_LONG=1 pytest -m slow."""
    tally = Tally()
    for strategy, n in (
        (grammar_files(), 3000),
        (templated_models(), 3000),
        (mutated_specs(), 15000),
    ):
        fuzz_test(strategy, n, tally, derandomize=False)()
    assert not tally.failures
