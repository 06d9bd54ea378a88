"""Files dslc reads but may not have written (docs/limits.md, "Files dslc reads"): each kind of
hostile or damaged file ends in exit 1 with a message naming the file and what is wrong, before
anything large is allocated, never in a traceback, a hang or a memory blow-up."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from test_train_data import (
    TINY,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_arrays,
    write_tiny,
)

from dslc import untrusted
from dslc.api import load
from dslc.backends import weights
from dslc.backends.weights import load_weights
from dslc.cli import main
from dslc.errors import DslcError
from dslc.runtime.generate import MAX_CONTEXT, onnx_model
from dslc.runtime.run import parse_input_args
from dslc.runtime.train import checkpoint, report
from dslc.runtime.train import tokenizer as tok
from dslc.runtime.train.contract import contract

ROOT = Path(__file__).resolve().parent.parent


def train(tmp_path: Path, *extra: str, out: str = "run") -> int:
    args = ["train", str(tmp_path / "tiny.dl"), "--data", str(tmp_path / "train.npz")]
    args += ["--val", str(tmp_path / "val.npz"), "--out", str(tmp_path / out), *extra]
    return main(args)


def error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# -- trainer.pt -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory after one epoch of the tiny spec (adam, no schedule)."""
    tmp = tmp_path_factory.mktemp("one_epoch")
    spec = TINY.replace("optimizer = sgd(lr=0.1, momentum=0.9)", "optimizer = adam(lr=0.01)")
    write_tiny(tmp, spec)
    torch.set_num_threads(1)
    assert train(tmp, "--epochs", "1") == 0
    return tmp


@pytest.fixture
def run_copy(one_epoch: Path, tmp_path: Path) -> Path:
    """A copy of the one-epoch run (spec, data and run directory) to tamper with."""
    shutil.copytree(one_epoch, tmp_path, dirs_exist_ok=True)
    return tmp_path


def tamper(tmp_path: Path, change) -> None:
    path = tmp_path / "run" / checkpoint.STATE
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def refused(tmp_path: Path, capsys, *words: str) -> str:
    assert train(tmp_path, "--resume") == 1
    err = error(capsys)
    assert f"--resume: {tmp_path / 'run' / 'trainer.pt'}" in err
    for word in words:
        assert word in err
    return err


@pytest.mark.parametrize("key", ["model", "position", "optimizer", "rng"])
def test_resume_refuses_a_checkpoint_lacking_a_part(run_copy, capsys, key):
    tamper(run_copy, lambda s: s.pop(key))
    refused(run_copy, capsys, f"lacks `{key}`")


def test_resume_refuses_weights_of_another_shape(run_copy, capsys):
    def wider(state):
        state["model"]["fc1.weight"] = torch.zeros(9, 4)

    tamper(run_copy, wider)
    refused(run_copy, capsys, "fc1.weight of shape [9, 4]", "the model's is [8, 4]")


def test_resume_refuses_weights_of_another_model(run_copy, capsys):
    tamper(run_copy, lambda s: s["model"].update(extra=torch.zeros(1)))
    refused(run_copy, capsys, "weights of another model", "1 unexpected", "extra")


def sgd_state(state) -> dict:
    """The state of an SGD-with-momentum optimizer over the same parameters."""
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    sgd = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    module(torch.zeros(2, 4)).sum().backward()
    sgd.step()
    return sgd.state_dict()


def test_resume_refuses_another_optimizers_state(run_copy, capsys):
    tamper(run_copy, lambda s: s.update(optimizer=sgd_state(s), optimizer_class="SGD"))
    refused(run_copy, capsys, "the state of a SGD optimizer, but the spec's is Adam")


def test_resume_refuses_another_optimizers_state_in_an_older_checkpoint(run_copy, capsys):
    """Checkpoints written before optimizer_class was recorded: SGD's settings give it away."""
    tamper(run_copy, lambda s: (s.update(optimizer=sgd_state(s)), s.pop("optimizer_class")))
    refused(run_copy, capsys, "another optimizer (it sets dampening, momentum, nesterov)")


def test_resume_refuses_optimizer_moments_of_another_shape(run_copy, capsys):
    tamper(run_copy, lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(9, 4)))
    refused(run_copy, capsys, "optimizer state exp_avg of shape [9, 4]", "of shape [8, 4]")


@pytest.mark.parametrize(
    ("garbage", "words"),
    [
        ("abc", "holds no random state rng.torch (a uint8 tensor), but str"),
        (torch.zeros(16, dtype=torch.uint8), "rng.torch of 16 bytes, not 5056"),
        (torch.zeros(5056, dtype=torch.uint8), "cannot be restored: Invalid mt19937 state"),
    ],
)
def test_resume_refuses_a_garbage_random_state(run_copy, capsys, garbage, words):
    tamper(run_copy, lambda s: s["rng"].update(torch=garbage))
    refused(run_copy, capsys, words)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("epoch", "one", "position.epoch = 'one', not int"),
        ("epoch", 99, "position.epoch = 99, out of range"),
        ("step", -1, "position.step = -1, out of range"),
        ("best", [1.0], "position.best = [1.0], not float | None"),
    ],
)
def test_resume_refuses_a_garbage_position(run_copy, capsys, field, value, words):
    tamper(run_copy, lambda s: s["position"].update({field: value}))
    refused(run_copy, capsys, words)


def test_resume_refuses_a_position_with_unknown_fields(run_copy, capsys):
    tamper(run_copy, lambda s: s["position"].update(lap=3))
    refused(run_copy, capsys, "a position that does not fit (`lap`)")


@pytest.mark.parametrize("schedule", ["one_cycle(max_lr=0.5)", "cosine(warmup=1)"])
def test_resume_checks_the_schedule(tmp_path, capsys, schedule):
    spec = TINY.replace("epochs = 3", f"epochs = 2\n    schedule = {schedule}")
    write_tiny(tmp_path, spec, n=16)
    assert train(tmp_path) == 0
    assert train(tmp_path, "--resume") == 0  # a finished run: restored, nothing left to do
    tamper(tmp_path, lambda s: s["scheduler"].update(last_epoch="x"))
    refused(tmp_path, capsys, "a learning-rate schedule whose `last_epoch` is of type str, not int")


def test_resume_refuses_a_trainer_pt_that_is_not_a_zip(run_copy, capsys):
    (run_copy / "run" / "trainer.pt").write_bytes(b"not a checkpoint at all")
    assert train(run_copy, "--resume") == 1
    assert "is not a dslc trainer checkpoint" in error(capsys)


def test_resume_refuses_a_trainer_pt_over_the_limit(run_copy, capsys, monkeypatch):
    monkeypatch.setenv("DSLC_MAX_CHECKPOINT_BYTES", "1000")
    assert train(run_copy, "--resume") == 1
    err = error(capsys)
    assert "trainer.pt is" in err and "over dslc's limit of 1000 bytes for checkpoint files" in err
    assert "DSLC_MAX_CHECKPOINT_BYTES=BYTES" in err


# -- metrics.jsonl, temporary files, byte-identical weights ----------------------------------


def test_a_garbage_metrics_line_is_skipped_with_a_warning(run_copy, capsys):
    """The log is a record of the run, not what resuming needs: a torn or edited line is
    named and skipped, then dropped from the file, rather than stranding the run."""
    log = run_copy / "run" / report.METRICS
    good = log.read_text()
    log.write_text(good + '{"epoch": 1, "train_loss": "x"}\n{"epoch": 2, "train_lo')
    assert train(run_copy, "--resume", "--epochs", "2") == 0
    err = error(capsys)
    assert f"warning: {log}:2: train_loss 'x' is not a number; skipped" in err
    assert f"warning: {log}:3: not JSON (a torn write?); skipped" in err
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_metrics_rows_skip_what_is_not_a_row(tmp_path, capsys):
    (tmp_path / report.METRICS).write_text(
        '{"epoch": 1, "train_loss": 0.5}\n[1, 2]\n{"epoch": true}\n' + "[" * 100_000 + "\n"
    )
    rows = report.MetricsLog(tmp_path).rows()
    assert [r["epoch"] for r in rows] == [1] and rows[0]["val_loss"] is None
    err = capsys.readouterr().err
    assert ":2: not a JSON object" in err and ":3: epoch True" in err and ":4: not JSON" in err


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_of_dead_processes_are_removed(run_copy, capsys):
    run = run_copy / "run"
    stale = run / f".trainer.pt.{dead_pid()}.tmp"
    live = run / f".last.safetensors.{os.getppid()}.tmp"  # a running process's write
    other = run / ".notes.tmp"
    for path in (stale, live, other):
        path.write_bytes(b"half a file")
    assert train(run_copy, "--resume", "--epochs", "2") == 0
    assert f"removed {stale.name}" in error(capsys)
    assert not stale.exists() and live.exists() and other.exists()
    assert not list(run.glob(f".*.{os.getpid()}.tmp"))  # this run left none of its own


def test_identical_runs_write_identical_weight_files(tmp_path):
    write_tiny(tmp_path, n=16)
    for out in ("a", "b"):
        assert train(tmp_path, "--epochs", "1", out=out) == 0
    for name in ("last.safetensors", "best.safetensors"):
        first, second = (tmp_path / out / name for out in ("a", "b"))
        assert first.read_bytes() == second.read_bytes(), name
    raw = (tmp_path / "a" / "best.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert list(header["__metadata__"]) == ["epoch", "model", "step", "val_loss"]


# -- class labels ---------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "span"), [(3, "0 to 3"), (-1, "-1 to 2")])
def test_class_labels_out_of_range_are_refused_before_training(tmp_path, capsys, label, span):
    write_tiny(tmp_path)
    arrays = tiny_arrays(64, 0)
    arrays["y"][17] = label
    np.savez(tmp_path / "train.npz", **arrays)
    assert train(tmp_path) == 1
    err = error(capsys)
    assert (
        f"{tmp_path / 'train.npz'}: array 'y' holds class {label} at index 17 (its labels span "
        f"{span}), but model Tiny's output 'logits' has 3 classes, 0 to 2" in err
    )
    assert "training Tiny" not in err  # refused before the first step


def test_class_labels_of_the_validation_file_are_checked(tmp_path, capsys):
    write_tiny(tmp_path)
    arrays = tiny_arrays(32, 1)
    arrays["y"][0] = 7
    np.savez(tmp_path / "val.npz", **arrays)
    assert train(tmp_path) == 1
    assert f"{tmp_path / 'val.npz'}: array 'y' holds class 7 at index 0" in error(capsys)


def test_class_counts_of_classifiers_and_language_models():
    digits = contract(load(str(ROOT / "specs/digits_cnn.dl"), {"classes": 5}))
    assert digits.classes == {"label": ("logits", 5)}
    gpt = contract(load(str(ROOT / "specs/tiny_gpt.dl"), {}))  # classes in the last dim
    assert gpt.classes == {"next": ("logits", next(iter(gpt.tokens.values())))}
    autoencoder = contract(load(str(ROOT / "specs/conv_autoencoder.dl"), {}))
    assert autoencoder.classes == {}


def test_language_model_token_targets_past_the_vocabulary(tmp_path, capsys):
    """A language model trained on .npz ids: the targets index the logits' last dim."""
    ids = np.random.default_rng(0).integers(0, 256, (8, 17))
    ids[5, 9] = 300
    np.savez(tmp_path / "ids.npz", tokens=ids[:, :-1], next=ids[:, 1:])
    spec = ["train", str(ROOT / "specs/tiny_gpt.dl"), "--param", "width=32", "--param", "layers=1"]
    assert main([*spec, "--data", str(tmp_path / "ids.npz"), "--out", str(tmp_path / "run")]) == 1
    err = error(capsys)
    assert "array 'next' holds class 300 at index (5, 8)" in err and "has 256 classes" in err


# -- dslc generate --onnx -------------------------------------------------------------------


def lm_onnx(path: Path, context: str | None = None, inputs: int = 1) -> str:
    """A stand-in language model: (N, T) int64 ids to (N, T, 4) logits."""
    names = [f"ids{i}" for i in range(inputs)]
    nodes = [
        helper.make_node("Cast", ["ids0"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["f", "axis"], ["u"]),
        helper.make_node("Mul", ["u", "scale"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lm",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["N", "T"]) for n in names],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "T", 4])],
        [
            helper.make_tensor("axis", TensorProto.INT64, [1], [2]),
            helper.make_tensor("scale", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if context is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "dslc.context", context
    onnx.save(model, path)
    return str(path)


def test_generate_refuses_a_model_with_two_inputs(tmp_path, capsys):
    path = lm_onnx(tmp_path / "two.onnx", "8", inputs=2)
    assert main(["generate", "--onnx", path]) == 1
    assert f"{path} is not a language model: it takes 2 inputs (ids0, ids1)" in error(capsys)


@pytest.mark.parametrize(
    ("context", "words"),
    [
        ("1e9", "'1e9', not a whole number of tokens"),
        ("abc", "'abc', not a whole number of tokens"),
        ("-3", "'-3', not a whole number of tokens"),
        (str(10**9), f"is 1000000000 tokens; dslc takes 1 to {MAX_CONTEXT:,}"),
        ("0", "is 0 tokens"),
    ],
)
def test_generate_refuses_a_bad_context_in_the_metadata(tmp_path, capsys, context, words):
    path = lm_onnx(tmp_path / "lm.onnx", context)
    assert main(["generate", "--onnx", path]) == 1
    err = error(capsys)
    assert f"{path}: metadata dslc.context" in err and words in err
    model = onnx_model(path, context=8)  # --context overrides what the file says
    assert model.context == 8 and model.vocab == 4


def test_generate_refuses_a_context_over_the_bound(tmp_path, capsys):
    path = lm_onnx(tmp_path / "lm.onnx", "8")
    assert onnx_model(path).context == 8
    assert main(["generate", "--onnx", path, "--context", str(MAX_CONTEXT + 1)]) == 1
    assert f"--context is {MAX_CONTEXT + 1} tokens; dslc takes 1 to" in error(capsys)


# -- tokenizer.json -------------------------------------------------------------------------


def test_a_tokenizer_nested_100000_deep(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DslcError, match="nested too deeply") as err:
        tok.load(path)
    assert str(path) in err.value.message


def test_a_tokenizer_over_the_size_limit(tmp_path, monkeypatch):
    path = tmp_path / "tokenizer.json"
    tok.save(tok.ByteTokenizer(), path)
    assert tok.load(path).kind == "bytes"
    monkeypatch.setenv("DSLC_MAX_TOKENIZER_BYTES", "10")
    with pytest.raises(DslcError, match=r"over dslc's limit of 10 bytes for tokenizer") as err:
        tok.load(path)
    assert str(path) in err.value.message
    assert untrusted.LIMITS["tokenizer"] == 64 * untrusted.MiB


# -- .npy and .npz --------------------------------------------------------------------------


def huge_npy(shape=(10**12, 4)) -> bytes:
    """An .npy header declaring `shape` of float64, followed by 16 bytes."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        f, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    return f.getvalue() + bytes(16)


def test_run_refuses_an_npy_whose_header_claims_terabytes(tmp_path):
    (tmp_path / "x.npy").write_bytes(huge_npy())
    with pytest.raises(DslcError) as err:
        parse_input_args([f"x={tmp_path / 'x.npy'}"])
    assert err.value.message == (
        f"input file '{tmp_path / 'x.npy'}': its header declares shape (1000000000000, 4) of "
        "float64 (29.1 TiB), but only 16 bytes follow (truncated or corrupt?)"
    )


def test_run_refuses_an_npz_member_whose_header_claims_terabytes(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as z:
        z.writestr("x.npy", huge_npy())
    with pytest.raises(DslcError, match=r"member x\.npy: its header declares shape"):
        parse_input_args([f"x={tmp_path / 'x.npz'}"])


def test_train_refuses_an_npz_member_whose_header_claims_terabytes(tmp_path, capsys):
    write_tiny(tmp_path)
    arrays = tiny_arrays(64)
    with zipfile.ZipFile(tmp_path / "train.npz", "w") as z:
        z.writestr("x.npy", huge_npy())
        buffer = io.BytesIO()
        np.save(buffer, arrays["y"])
        z.writestr("y.npy", buffer.getvalue())
    assert train(tmp_path) == 1
    err = error(capsys)
    assert f"{tmp_path / 'train.npz'}: member x.npy: its header declares shape" in err


def test_npz_zip_bomb_is_refused_by_its_compression_ratio(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "z.npz", x=np.zeros(1 << 20, np.float32))
    assert parse_input_args([f"x={tmp_path / 'z.npz'}"])["x"].shape == (1 << 20,)
    monkeypatch.setattr(untrusted, "RATIO_FLOOR", 1 << 20)
    with pytest.raises(DslcError, match="refused as a zip bomb") as err:
        parse_input_args([f"x={tmp_path / 'z.npz'}"])
    assert f"{tmp_path / 'z.npz'}: member x.npy would expand from" in err.value.message


def test_npz_members_are_checked_against_the_data_limit(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "d.npz", x=np.zeros(1000, np.float64))
    assert (tmp_path / "d.npz").stat().st_size < 1000
    monkeypatch.setenv("DSLC_MAX_DATA_BYTES", "100")
    with pytest.raises(DslcError, match="over dslc's limit of 100 bytes for data files") as err:
        parse_input_args([f"x={tmp_path / 'd.npz'}"])
    assert "d.npz is" in err.value.message
    monkeypatch.setenv("DSLC_MAX_DATA_BYTES", "5000")  # the file fits; its member does not
    with pytest.raises(DslcError, match=r"d\.npz: member x\.npy is 7.94 KiB, over"):
        parse_input_args([f"x={tmp_path / 'd.npz'}"])


def test_a_gzipped_idx_file_is_refused_by_its_header_before_decompressing(tmp_path, capsys):
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 10**6, 1000, 1000)  # 1 TB
    (tmp_path / "images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(100)))
    labels = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 5) + bytes(5)
    (tmp_path / "labels-idx1-ubyte").write_bytes(labels)
    (tmp_path / "tiny.dl").write_text(TINY)
    args = ["train", str(tmp_path / "tiny.dl"), "--data", str(tmp_path)]
    assert main([*args, "--out", str(tmp_path / "run")]) == 1
    err = error(capsys)
    assert "images-idx3-ubyte.gz (decompressed, as its header declares) is 931 GiB" in err


@pytest.mark.parametrize(
    ("kind", "name", "spec"), [("csv", "d.csv", "tiny.dl"), ("text", "t.txt", "tiny_gpt.dl")]
)
def test_csv_and_text_over_their_limits(tmp_path, capsys, monkeypatch, kind, name, spec):
    (tmp_path / name).write_text("y,a\n1,2\n" * 10)
    (tmp_path / "tiny.dl").write_text(TINY)
    shutil.copy(ROOT / "specs/tiny_gpt.dl", tmp_path)
    monkeypatch.setenv(untrusted.env_name(kind), "8")
    args = ["train", str(tmp_path / spec), "--data", str(tmp_path / name)]
    assert main([*args, "--out", str(tmp_path / "run")]) == 1
    assert f"{tmp_path / name} is 80 bytes, over dslc's limit of 8 bytes" in error(capsys)


def test_a_bad_limit_override(tmp_path, monkeypatch):
    (tmp_path / "t.json").write_text("{}")
    monkeypatch.setenv("DSLC_MAX_TOKENIZER_BYTES", "lots")
    with pytest.raises(DslcError, match="DSLC_MAX_TOKENIZER_BYTES='lots' is not a number"):
        tok.load(tmp_path / "t.json")


# -- torch.save weights ---------------------------------------------------------------------


def test_a_stride_0_view_is_refused_before_it_is_materialized(tmp_path):
    """1.6 KB on disk, 625 million elements as a contiguous array: refused from its layout."""
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1).expand(25000, 25000)}, path)
    assert path.stat().st_size < 4096
    code = (
        "from dslc.backends.weights import load_weights\n"
        "from dslc.errors import DslcError\n"
        f"try:\n    load_weights({str(path)!r})\nexcept DslcError as e:\n    print(e.message)\n"
        "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"  # peak, KiB
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    message, peak_kib = out.stdout.strip().splitlines()
    assert "a tensor of shape (25000, 25000) views a storage of 1 elements" in message
    assert str(path) in message and "refused" in message
    assert int(peak_kib) < 200 * 1024, f"peaked at {int(peak_kib) // 1024} MiB"


def test_a_small_expanded_view_still_loads(tmp_path):
    torch.save({"w": torch.arange(3.0).expand(4, 3)}, tmp_path / "w.pt")
    assert load_weights(tmp_path / "w.pt")["w"].tolist() == [[0.0, 1.0, 2.0]] * 4


def test_many_views_of_one_storage_are_bounded(tmp_path, monkeypatch):
    t = torch.zeros(1000)
    torch.save({f"w{i}": t.view(1000) for i in range(10)}, tmp_path / "w.pt")  # 10 views
    assert len(load_weights(tmp_path / "w.pt")) == 10
    monkeypatch.setattr(weights, "MAX_EXPANDED_ELEMENTS", 10)
    with pytest.raises(DslcError, match="more than 4 times the bytes of the storages"):
        load_weights(tmp_path / "w.pt")


def recompress(path: Path) -> None:
    """torch.save stores its members; the same archive deflated, as a zip bomb would be."""
    with zipfile.ZipFile(path) as src:
        members = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info, data in members:
            dst.writestr(info.filename, data)


def test_a_compressed_storage_is_refused_by_its_ratio(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1 << 20)}, path)  # 4 MiB of zeros: a few KB deflated
    recompress(path)
    assert path.stat().st_size < 64 * 1024
    assert load_weights(path)["w"].shape == (1 << 20,)  # below the floor: read
    monkeypatch.setattr(untrusted, "RATIO_FLOOR", 1 << 20)
    with pytest.raises(DslcError, match=r"member \S*data/0 would expand from .* zip bomb"):
        load_weights(path)


def test_weights_over_the_limit(tmp_path, monkeypatch):
    torch.save({"w": torch.zeros(100)}, tmp_path / "w.pt")
    monkeypatch.setenv("DSLC_MAX_WEIGHTS_BYTES", "100")
    with pytest.raises(DslcError, match="w.pt is .*, over dslc's limit of 100 bytes for weights"):
        load_weights(tmp_path / "w.pt")


def test_a_huge_data_pkl_is_refused(tmp_path, monkeypatch):
    torch.save({"w": torch.zeros(2)}, tmp_path / "w.pt")
    monkeypatch.setenv("DSLC_MAX_PICKLE_BYTES", "10")
    with pytest.raises(DslcError, match=r"member \S*data\.pkl is .* for pickle files"):
        load_weights(tmp_path / "w.pt")


# -- ONNX external data ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["../secret.bin", "absolute", "link.bin"])
def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path, capsys, where):
    """docs/limits.md says onnxruntime refuses these; `dslc run` reports it as exit 1."""
    (tmp_path / "secret.bin").write_bytes(np.ones(2, np.float32).tobytes())
    (tmp_path / "model").mkdir()
    if where == "link.bin":
        (tmp_path / "model" / "link.bin").symlink_to(tmp_path / "secret.bin")
    location = str(tmp_path / "secret.bin") if where == "absolute" else where
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [0.0, 0.0])
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "model" / "m.onnx"
    path.write_bytes(model.SerializeToString())
    np.save(tmp_path / "x.npy", np.zeros(2, np.float32))
    assert main(["run", str(path), "--input", f"x={tmp_path / 'x.npy'}"]) == 1
    err = error(capsys)
    assert "onnxruntime cannot load" in err and "External data path" in err
