"""The grammar lives in grammar/ at the top of the repository and ships inside the wheel as
dslc/grammar/: a wheel, unpacked and imported from another directory, finds it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_the_wheel_carries_the_grammar(tmp_path):
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if (
        build.returncode != 0
        and "hatchling" in build.stderr
        and "No matching distribution" in build.stderr
    ):
        pytest.skip("the build backend (hatchling) cannot be installed here")
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("dslc-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert "dslc/grammar/dslc.lark" in z.namelist()
        assert {"dslc/stdlib/vision.dl", "dslc/stdlib/transformer.dl"} <= set(z.namelist())
        z.extractall(tmp_path / "site")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "m.dl").write_text(
        "import std.transformer\n"
        "model M { input x: f32[N, T, 8]  output y = x -> EncoderLayer(8, 2, 16) -> linear(1) }"
    )
    code = (
        "import dslc, dslc.frontend.parse as s; "
        "assert str(s.grammar_path()).startswith(sys.argv[1]), s.grammar_path(); "
        "print(dslc.load('m.dl').param_count)"
    )
    r = subprocess.run(
        [sys.executable, "-c", "import sys; " + code, str(tmp_path / "site")],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    # the encoder layer: attention 4 * (8 * 8 + 8), two norms 2 * 16, the network
    # (8 * 16 + 16) + (16 * 8 + 8); then linear(1): 8 + 1
    assert r.stdout.strip() == str(4 * 72 + 32 + 144 + 136 + 9)
