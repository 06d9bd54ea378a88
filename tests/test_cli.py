"""The dslc command: each subcommand, its files, its exit codes (0 ok, 1 user error, 2 bug)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
import safetensors.torch
import torch
from conftest import ROOT, SPECS
from onnx import numpy_helper

import dslc
from dslc.cli import main

LENET = "specs/lenet5.dl"


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def dslc_process(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "dslc", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_reports_the_parameter_count(capsys):
    assert main(["check", LENET]) == 0
    assert capsys.readouterr().out == "specs/lenet5.dl: ok: model LeNet5, 61,706 parameters\n"


def test_param_overrides_a_model_parameter(capsys):
    assert main(["check", "specs/small_resnet.dl", "--param", "width=8"]) == 0
    small = capsys.readouterr().out
    assert main(["check", "specs/small_resnet.dl"]) == 0
    assert small != capsys.readouterr().out
    assert (
        dslc.load("specs/small_resnet.dl", {"width": 8}).param_count
        < dslc.load("specs/small_resnet.dl").param_count
    )


def test_compile_torch_to_stdout_is_the_generated_source(capsys):
    assert main(["compile", LENET, "--target", "torch"]) == 0
    assert capsys.readouterr().out == dslc.load(LENET).torch_source()


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_compile_onnx_with_trained_weights(tmp_path, fmt):
    model = dslc.load(LENET).torch_module()
    state = model.state_dict()
    weights = tmp_path / f"w.{fmt}"
    if fmt == "pt":
        torch.save(state, weights)
    else:
        safetensors.torch.save_file(state, weights)
    out = tmp_path / "m.onnx"
    assert (
        main(["compile", LENET, "--target", "onnx", "-o", str(out), "--weights", str(weights)]) == 0
    )
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    assert inits.keys() == state.keys()
    # The linear layers' weights are stored transposed, (in, out), as MatMul's B: transposed
    # when the model is built, from the state_dict's (out, in).
    graph = dslc.load(LENET).graph
    transposed = {n.key(k) for n in graph.nodes for k in n.op.transposed_params}
    assert transposed == {k for k in state if k.startswith("fc") and k.endswith("weight")}
    for k, v in state.items():
        np.testing.assert_array_equal(inits[k], v.numpy().T if k in transposed else v.numpy())


# Compiles the specs given as (spec, output) pairs to the target in argv[1], in one process.
COMPILE_ALL = """
import sys
from dslc.cli import main
args = sys.argv[2:]
for spec, out in zip(args[::2], args[1::2]):
    if main(["compile", spec, "--target", sys.argv[1], "-o", out]) != 0:
        sys.exit(f"{spec} did not compile")
"""


@pytest.mark.parametrize("target", ["torch", "onnx", "ir"])
def test_output_is_byte_identical_across_processes(tmp_path, target):
    """Two separate processes (different hash seeds, running side by side) write the same
    bytes, for every spec; the second compiles them in the opposite order, so that output
    that depended on what the process compiled before would show too."""
    runs = []
    for seed, order in (("1", SPECS), ("2", SPECS[::-1])):
        pairs = [a for s in order for a in (f"specs/{s.name}", str(tmp_path / f"{s.stem}.{seed}"))]
        runs.append(
            subprocess.Popen(
                [sys.executable, "-c", COMPILE_ALL, target, *pairs],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": seed},
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for run in runs:
        _, err = run.communicate(timeout=900)
        assert run.returncode == 0, err
    for spec in SPECS:
        first, second = (tmp_path / f"{spec.stem}.{seed}" for seed in ("1", "2"))
        assert first.read_bytes() == second.read_bytes(), spec.name


def test_the_onnx_path_does_not_import_torch(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save(dslc.load(LENET).torch_module().state_dict(), weights)
    code = (
        "import sys; from dslc.cli import main; "
        f"rc = main(['compile', '{LENET}', '--target', 'onnx', '-o', r'{tmp_path / 'm.onnx'}', "
        f"'--weights', r'{weights}']); "
        "assert rc == 0; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr


def test_run_prints_and_saves_outputs(tmp_path, capsys):
    onnx_path, x_path, out = tmp_path / "m.onnx", tmp_path / "x.npy", tmp_path / "out.npz"
    assert main(["compile", LENET, "--target", "onnx", "-o", str(onnx_path)]) == 0
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    np.save(x_path, x)
    assert main(["run", str(onnx_path), "--input", f"x={x_path}", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("logits: float32 (2, 10) [")
    assert np.load(out)["logits"].shape == (2, 10)


def test_run_checks_the_input_shape(tmp_path, capsys):
    onnx_path, x_path = tmp_path / "m.onnx", tmp_path / "x.npy"
    main(["compile", LENET, "--target", "onnx", "-o", str(onnx_path)])
    np.save(x_path, np.zeros((2, 3, 32, 32), np.float32))
    assert main(["run", str(onnx_path), "--input", f"x={x_path}"]) == 1
    assert (
        "input 'x' has shape (2, 3, 32, 32) but the model expects (N, 1, 32, 32)"
        in capsys.readouterr().err
    )


def test_verify_agrees(tmp_path, capsys):
    assert main(["verify", LENET, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "agree: largest difference" in out
    assert {p.name for p in tmp_path.iterdir()} == {"model.py", "weights.pt", "model.onnx"}


def test_user_errors_exit_1(capsys):
    assert main(["check", "specs/no_such_spec.dl"]) == 1
    assert "no such file: specs/no_such_spec.dl" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["compile", LENET, "--target", "tensorflow"])
    assert exit_info.value.code == 1


def test_internal_errors_exit_2(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("dslc.cli.load", broken)
    assert main(["check", LENET]) == 2
    assert "internal error: this is a bug in dslc" in capsys.readouterr().err


def test_errors_in_a_spec_exit_1_without_traceback():
    r = dslc_process("check", "tests/errors/two_errors.dl")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and r.stderr.endswith("2 errors\n")


def test_summary_prints_the_table(capsys):
    assert main(["summary", str(LENET)]) == 0
    out = capsys.readouterr().out
    assert out == dslc.load(LENET).summary()
    assert "conv1 conv2d (N, 6, 28, 28) 156 117.60K" in " ".join(out.split())
    assert "Parameters: 61,706 (61,706 trainable, 0 frozen)" in out
    assert "MACs per example: 416,520" in out


# ---- standard input and output, colour, paths, help


def dslc_bytes(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """The dslc command with binary stdin and stdout."""
    return subprocess.run(
        [sys.executable, "-m", "dslc", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        input=stdin,
        capture_output=True,
        check=False,
    )


@pytest.mark.parametrize("target", ["torch", "ir"])
def test_dash_output_is_standard_output(target, capsys):
    assert main(["compile", LENET, "--target", target, "-o", "-"]) == 0
    spec = dslc.load(LENET)
    assert capsys.readouterr().out == (spec.torch_source() if target == "torch" else spec.ir_text())
    assert not (ROOT / "-").exists(), "-o - wrote a file named '-'"


def test_onnx_to_standard_output_is_the_file_bytes(tmp_path):
    out = tmp_path / "m.onnx"
    assert main(["compile", LENET, "--target", "onnx", "-o", str(out)]) == 0
    r = dslc_bytes("compile", LENET, "--target", "onnx", "-o", "-")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == out.read_bytes()
    assert r.stderr.decode().startswith("wrote <stdout>: ")
    assert onnx.load_from_string(r.stdout).graph.name


def test_onnx_to_standard_output_refuses_show_and_a_terminal(monkeypatch, capsys):
    assert main(["compile", LENET, "--target", "onnx", "-o", "-", "--show"]) == 1
    assert "--show prints the graph to standard output" in capsys.readouterr().err
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["compile", LENET, "--target", "onnx", "-o", "-"]) == 1
    assert "not written to a terminal" in capsys.readouterr().err


def test_a_closed_pipe_is_not_an_internal_error():
    """`dslc compile ... -o - | head -c 10`: the reader leaves early."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dslc", "compile", LENET, "--target", "onnx", "-o", "-"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141, err
    assert "Traceback" not in err and "internal error" not in err


def test_dash_reads_the_spec_from_standard_input():
    source = (ROOT / LENET).read_bytes()
    r = dslc_bytes("check", "-", stdin=b"\xef\xbb\xbf" + source)  # with a byte-order mark
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == "<stdin>: ok: model LeNet5, 61,706 parameters\n"
    r = dslc_bytes("compile", "-", stdin=source)
    assert r.stdout.decode() == dslc.load(LENET).torch_source().replace(LENET, "<stdin>")


def test_errors_in_standard_input_are_located_there():
    r = dslc_bytes(
        "check", "-", stdin=b"model M {\n    input x: f32[N, 2]\n    output y = x -> nope\n}\n"
    )
    assert r.returncode == 1
    assert r.stderr.decode().startswith("<stdin>:3:21: error: unknown layer or block 'nope'\n")


def test_an_absolute_path_is_printed_as_given(tmp_path, capsys):
    """Outside the working directory too, so that an editor can jump to path:line:col."""
    spec = tmp_path / "bad.dl"
    spec.write_text("model M {\n    input x: f32[N, 2]\n    output y = x -> nope\n}\n")
    assert main(["check", str(spec)]) == 1
    assert capsys.readouterr().err.startswith(f"{spec.as_posix()}:3:21: error: ")
    ok = tmp_path / "ok.dl"
    ok.write_text((ROOT / LENET).read_text())
    assert main(["check", str(ok)]) == 0
    assert capsys.readouterr().out.startswith(f"{ok.as_posix()}: ok: ")
    assert f"Spec: {ok.as_posix()}\n" in dslc.load(ok).torch_source()


BAD = "tests/errors/two_errors.dl"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_diagnostics_are_coloured_on_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    assert main(["check", BAD]) == 1
    plain = capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["check", BAD]) == 1
    coloured = capsys.readouterr().err
    assert "\x1b[1;31merror:\x1b[0m" in coloured and "\x1b[1;32m^" in coloured
    assert ANSI.sub("", coloured) == plain, "colour changed the text"
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["check", BAD]) == 1
    assert capsys.readouterr().err == plain


def test_colour_only_on_a_real_terminal():
    """stderr on a pseudo-terminal is coloured; NO_COLOR (any value) and a pipe are not."""
    outs = []
    for no_color in ("", "1"):
        main_fd, sub_fd = pty.openpty()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": no_color, "TERM": "xterm"}
        r = subprocess.run(
            [sys.executable, "-m", "dslc", "check", BAD],
            cwd=ROOT,
            env=env,
            stderr=sub_fd,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        os.close(sub_fd)
        outs.append(_read_all(main_fd))
        assert r.returncode == 1
    assert b"\x1b[1;31merror:" in outs[0]
    assert b"\x1b[" not in outs[1]
    piped = dslc_process("check", BAD, env={"NO_COLOR": "", "TERM": "xterm"})
    assert "\x1b[" not in piped.stderr and ": error: " in piped.stderr


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


COMMANDS = ["check", "summary", "compile", "verify", "train", "generate", "run"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    examples = out[out.index("\nexamples:\n") :]
    assert f"  dslc {command} " in examples


def test_compile_help_names_the_onnx_default(capsys):
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "- for standard output" in help_text
    assert "onnx to the model's name lowercased, in the current directory: lenet5.onnx" in help_text


def test_onnx_default_output_is_the_lowercased_model_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compile", str(ROOT / LENET), "--target", "onnx"]) == 0
    assert (tmp_path / "lenet5.onnx").is_file()
