"""The parser never loads anything from a shared location. lark's `cache=True` keeps the LALR
tables as a pickle in the temp directory, at a name anyone can compute from the grammar, and
unpickles it on every run: a file planted there would run its payload on `dslc check`. dslc
builds the tables afresh instead (about 30 ms)."""

from __future__ import annotations

import getpass
import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import lark
from conftest import ROOT

from dslc.frontend.parse import grammar_path, parser

# The options dslc's parser was built with when it used lark's cache, in the same order.
CACHED_OPTIONS = {
    "parser": "lalr",
    "propagate_positions": True,
    "maybe_placeholders": True,
    "cache": True,
}


class Payload:
    """Unpickling this creates a directory: proof that the file was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def lark_cache_path(tmpdir: Path, options: dict) -> Path:
    """Where lark keeps cache=True's pickle (lark/lark.py, Lark.__init__, lark 1.x)."""
    unhashable = ("transformer", "postlex", "lexer_callbacks", "edit_terminals", "_plugins")
    options_str = "".join(k + str(v) for k, v in options.items() if k not in unhashable)
    text = grammar_path().read_text() + options_str + lark.__version__ + str(sys.version_info[:2])
    digest = hashlib.sha256(text.encode("utf8")).hexdigest()
    major, minor = sys.version_info[:2]
    return tmpdir / f".lark_cache_{getpass.getuser()}_{digest}_{major}_{minor}.tmp"


def plant(tmpdir: Path, marker: Path) -> Path:
    path = lark_cache_path(tmpdir, CACHED_OPTIONS)
    digest = path.name.split("_")[-3]
    path.write_bytes(digest.encode() + b"\n" + pickle.dumps(Payload(marker)))
    return path


def python(tmpdir: Path, *args: str) -> subprocess.CompletedProcess:
    """A fresh interpreter whose temp directory is `tmpdir`."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_planted_file_would_run_under_lark_cache(tmp_path):
    """The plant is live: a parser built with cache=True executes it. (Checks the path above.)"""
    marker = tmp_path / "pwned"
    plant(tmp_path, marker)
    code = (
        "import lark; from dslc.frontend.parse import grammar_path; "
        "lark.Lark(grammar_path().read_text(), parser='lalr', propagate_positions=True, "
        "maybe_placeholders=True, cache=True)"
    )
    r = python(tmp_path, "-c", code)
    assert r.returncode == 0, r.stderr
    assert marker.exists(), "the planted pickle was not loaded: lark_cache_path is out of date"


def test_dslc_check_does_not_unpickle_from_the_temp_directory(tmp_path):
    marker = tmp_path / "pwned"
    planted = plant(tmp_path, marker)
    r = python(tmp_path, "-m", "dslc", "check", "specs/lenet5.dl")
    assert r.returncode == 0, r.stderr
    assert not marker.exists(), "dslc check executed a pickle planted in the temp directory"
    assert sorted(tmp_path.iterdir()) == [planted], "dslc wrote to the temp directory"


def test_the_parser_is_built_without_a_cache():
    assert not parser().options.cache
