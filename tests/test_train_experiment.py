"""A run is one experiment: experiment.json records the spec, the --param values, the data's
fingerprints and the dslc version; --resume refuses a changed spec, parameters or data (exit 1,
a message naming the change), --force-resume continues with a warning; labels out of the
loss's range and an architecture changed under --resume are exit 1 with a message."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from test_train_data import (
    TINY,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    tiny_arrays,
    write_tiny,
)

import dslc
from dslc.cli import main

PARAM_TINY = TINY.replace("model Tiny {", "model Tiny(classes: int = 3) {").replace(
    "linear(3)", "linear(classes)"
)


def train(spec, data, out, *extra) -> int:
    return main(["train", spec, "--data", data, "--out", str(out), "--epochs", "1", *extra])


@pytest.fixture
def run(tmp_path):
    """A finished one-epoch run of the tiny spec (with a classes parameter) and --val."""
    spec, data, val = write_tiny(tmp_path, PARAM_TINY)
    assert train(spec, data, tmp_path / "run", "--val", val, "--param", "classes=3") == 0
    return tmp_path, spec, data, val


def test_the_record_holds_spec_params_data_and_version(run):
    tmp, spec, data, val = run
    rec = json.loads((tmp / "run" / "experiment.json").read_text())
    text = open(spec).read()
    assert rec["spec"]["text"] == text
    assert rec["spec"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert rec["params"] == {"classes": 3}
    assert rec["dslc_version"] == dslc.__version__
    for key, path in (("train", data), ("val", val)):
        (entry,) = rec["data"][key]["files"]
        raw = open(path, "rb").read()
        assert entry == {
            "name": path.rsplit("/", 1)[1],
            "bytes": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
        }


def test_resume_with_everything_the_same_continues(run, capsys):
    tmp, spec, data, val = run
    args = ("--val", val, "--param", "classes=3", "--resume", "--epochs", "2")
    assert main(["train", spec, "--data", data, "--out", str(tmp / "run"), *args]) == 0
    assert "resuming" in capsys.readouterr().err


def resume(run, *extra, spec=None, data=None):
    tmp, spec0, data0, val = run
    return train(spec or spec0, data or data0, tmp / "run", "--resume", *extra)


def test_resume_refuses_a_changed_learning_rate(run, capsys):
    tmp, spec, data, val = run
    edited = tmp / "edited.dl"
    edited.write_text(open(spec).read().replace("lr=0.1", "lr=0.5"))
    capsys.readouterr()
    assert resume(run, "--val", val, "--param", "classes=3", spec=str(edited)) == 1
    err = capsys.readouterr().err
    line = PARAM_TINY.splitlines().index("    optimizer = sgd(lr=0.1, momentum=0.9)") + 1
    assert "is another experiment: the spec changed (line" in err
    assert f"line {line}: `optimizer = sgd(lr=0.1, momentum=0.9)` then, " in err
    assert "`optimizer = sgd(lr=0.5, momentum=0.9)` now" in err
    assert "--force-resume" in err and "Traceback" not in err


def test_resume_refuses_dropped_val_changed_params_and_data(run, capsys):
    tmp, spec, data, val = run
    capsys.readouterr()
    assert resume(run, "--param", "classes=3") == 1
    err = capsys.readouterr().err
    assert f"--val {val} (val.npz " in err and "then, none now" in err
    assert resume(run, "--val", val, "--param", "classes=4") == 1
    assert "--param values classes=3 then, classes=4 now" in capsys.readouterr().err
    other = tmp / "other.npz"
    np.savez(other, **tiny_arrays(64, seed=5))
    assert resume(run, "--val", val, "--param", "classes=3", data=str(other)) == 1
    err = capsys.readouterr().err
    assert f"--data {data} (train.npz " in err and f"then, {other} (other.npz " in err


def test_resume_refuses_a_changed_imported_file(tmp_path, capsys):
    """A derived model's network is in the file it imports: an edit there that keeps every
    shape (tanh for relu; the checkpoint would still load) is a change of experiment too."""
    write_tiny(tmp_path)
    (tmp_path / "net.dl").write_text((tmp_path / "tiny.dl").read_text())
    (tmp_path / "tuned.dl").write_text(
        'import "net.dl"\n\nmodel Tuned = Tiny\n\n' + TINY[TINY.index("train {") :]
    )
    spec, data = str(tmp_path / "tuned.dl"), str(tmp_path / "train.npz")
    assert train(spec, data, tmp_path / "run") == 0
    rec = json.loads((tmp_path / "run" / "experiment.json").read_text())
    (imported,) = rec["spec"]["imports"]
    assert imported["path"].endswith("net.dl") and "linear(8) -> relu" in imported["text"]
    (tmp_path / "net.dl").write_text((tmp_path / "net.dl").read_text().replace("relu", "tanh"))
    capsys.readouterr()
    assert train(spec, data, tmp_path / "run", "--resume", "--epochs", "2") == 1
    err = capsys.readouterr().err
    assert "is another experiment: the imported file " in err and "net.dl changed (line 4: " in err
    assert "`output logits = x -> linear(8) -> tanh -> linear(3)` now" in err


def test_force_resume_warns_records_and_continues(run, capsys):
    tmp, spec, data, val = run
    capsys.readouterr()
    assert resume(run, "--val", val, "--param", "classes=3", "--epochs", "2") == 0
    assert "warning" not in capsys.readouterr().err
    edited = tmp / "edited.dl"
    edited.write_text(open(spec).read().replace("lr=0.1", "lr=0.05"))
    args = ("--val", val, "--param", "classes=3", "--epochs", "3")
    assert train(str(edited), data, tmp / "run", "--force-resume", *args) == 0
    assert "warning: --force-resume: the spec changed" in capsys.readouterr().err
    rec = json.loads((tmp / "run" / "experiment.json").read_text())
    assert "lr=0.05" in rec["spec"]["text"]
    assert rec["forced"][0]["changes"][0].startswith("the spec changed")


def test_force_resume_into_another_architecture_is_exit_1(run, capsys):
    tmp, spec, data, val = run
    capsys.readouterr()
    assert resume(run, "--force-resume", "--val", val, "--param", "classes=5") == 1
    err = capsys.readouterr().err
    assert "holds fc2.weight of shape [3, 8], but the model's is [5, 8]" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("label", "classes", "shown"),
    [(7, 5, "holds class 7"), (-1, 3, "holds class -1")],
)
def test_labels_out_of_the_loss_range_are_found_before_training(
    tmp_path, capsys, label, classes, shown
):
    """The issue's repro (digits_cnn --param classes=5 on ten-class data) in small: exit 1,
    naming the value, the class count and the file, never IndexError and exit 2."""
    spec, data, _ = write_tiny(tmp_path, PARAM_TINY)
    arrays = tiny_arrays(64)
    arrays["y"] = np.minimum(arrays["y"], classes - 1)
    arrays["y"][10] = label
    np.savez(tmp_path / "bad.npz", **arrays)
    code = train(spec, str(tmp_path / "bad.npz"), tmp_path / "r", "--param", f"classes={classes}")
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"bad.npz: array 'y' {shown} at index 10" in err
    assert f"has {classes} classes, 0 to {classes - 1}" in err


def test_a_damaged_record_is_refused_not_a_traceback(run, capsys):
    tmp, spec, data, val = run
    (tmp / "run" / "experiment.json").write_text('{"spec": "edited", "data": 3, "forced": 1}')
    capsys.readouterr()
    assert resume(run, "--val", val, "--param", "classes=3") == 1
    assert "does not read as an experiment record" in capsys.readouterr().err
    assert resume(run, "--force-resume", "--val", val, "--param", "classes=3", "--epochs", "2") == 0
