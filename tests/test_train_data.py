"""dslc train's data: every format loads into the arrays the spec declares, and every kind of bad
data stops the command before training with exit 1 and a message naming the array."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from dslc.cli import main
from dslc.runtime.train import data

TINY = """
model Tiny {
    input x: f32[N, 4]
    output logits = x -> linear(8) -> relu -> linear(3)
}

train {
    target y: i64[N]
    loss = cross_entropy(logits, y)
    optimizer = sgd(lr=0.1, momentum=0.9)
    batch_size = 8
    epochs = 3
}
"""


@pytest.fixture(autouse=True)
def one_thread():
    """Training tests use one torch thread: on two shared cores, OpenMP threads contending
    with other processes make tiny models several times slower. (Other test files import it;
    subprocesses get OMP_NUM_THREADS=1, so results match bit for bit.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SIGNATURE = {"x": ("float32", ("N", 4)), "y": ("int64", ("N",))}


def tiny_arrays(n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Three separable clusters in 4-D."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 4)) * 0.3 + np.eye(3, 4)[y] * 2
    return {"x": x.astype(np.float32), "y": y.astype(np.int64)}


def write_tiny(tmp_path, spec: str = TINY, n: int = 64) -> tuple[str, str, str]:
    """The tiny spec, train.npz and val.npz in tmp_path; returns their paths."""
    (tmp_path / "tiny.dl").write_text(spec)
    np.savez(tmp_path / "train.npz", **tiny_arrays(n, 0))
    np.savez(tmp_path / "val.npz", **tiny_arrays(32, 1))
    return str(tmp_path / "tiny.dl"), str(tmp_path / "train.npz"), str(tmp_path / "val.npz")


def train_cli(tmp_path, data_arg: str, *extra: str) -> int:
    spec = tmp_path / "tiny.dl"
    if not spec.exists():
        spec.write_text(TINY)
    args = ["train", str(spec), "--data", data_arg, "--out", str(tmp_path / "run"), *extra]
    return main(args)


def write_idx(path, array: np.ndarray, code: int = 0x08) -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


# -- formats ---------------------------------------------------------------------------------


def test_npz_loads_as_declared(tmp_path):
    _, train, _ = write_tiny(tmp_path)
    arrays = data.load(train, SIGNATURE, "Tiny")
    expected = tiny_arrays()
    assert list(arrays) == ["x", "y"]
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], expected[k])
        assert arrays[k].dtype == expected[k].dtype


def test_csv_header_names_the_target_and_the_rest_feed_the_input(tmp_path):
    a = tiny_arrays(10)
    rows = ["f0,f1,y,f2,f3"] + [
        f"{r[0]},{r[1]},{t},{r[2]},{r[3]}" for r, t in zip(a["x"], a["y"], strict=True)
    ]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    arrays = data.load(str(tmp_path / "d.csv"), SIGNATURE, "Tiny")
    np.testing.assert_allclose(arrays["x"], a["x"], rtol=1e-6)
    np.testing.assert_array_equal(arrays["y"], a["y"])
    assert arrays["x"].dtype == np.float32 and arrays["y"].dtype == np.int64


def test_csv_columns_flag_maps_columns(tmp_path):
    (tmp_path / "d.csv").write_text("label,a,b,c,d,junk\n2,1,2,3,4,9\n0,5,6,7,8,9\n")
    columns = {"x": ["a", "b", "c", "d"], "y": ["label"]}
    arrays = data.load(str(tmp_path / "d.csv"), SIGNATURE, "Tiny", columns)
    np.testing.assert_array_equal(arrays["x"], [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(arrays["y"], [2, 0])


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_files_load_images_scaled_to_unit_range(tmp_path, suffix):
    images = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2) * 10
    labels = np.array([0, 1, 2, 1, 0], np.uint8)
    write_idx(tmp_path / f"images-idx3-ubyte{suffix}", images)
    write_idx(tmp_path / f"labels-idx1-ubyte{suffix}", labels)
    pair = f"{tmp_path}/images-idx3-ubyte{suffix}:{tmp_path}/labels-idx1-ubyte{suffix}"
    for arg in (pair, str(tmp_path)):  # two files, or the directory holding them
        arrays = data.load(arg, SIGNATURE, "Tiny")
        np.testing.assert_allclose(arrays["x"], images.reshape(5, 4) / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(arrays["y"], labels)
        assert arrays["y"].dtype == np.int64


def test_text_becomes_next_token_windows(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"hello world!")
    sig = {"tokens": ("int64", ("N", 4)), "next": ("int64", ("N", 4))}
    arrays = data.load(str(tmp_path / "t.txt"), sig, "LM")
    raw = np.frombuffer(b"hello world!", np.uint8).astype(np.int64)
    assert arrays["tokens"].shape == (2, 4)  # (12 - 1) // 4 windows
    np.testing.assert_array_equal(arrays["tokens"], [raw[0:4], raw[4:8]])
    np.testing.assert_array_equal(arrays["next"], [raw[1:5], raw[5:9]])


def test_integer_features_convert_to_float(tmp_path):
    a = tiny_arrays(16)
    np.savez(tmp_path / "ints.npz", x=np.rint(a["x"] * 10).astype(np.int32), y=a["y"])
    arrays = data.load(str(tmp_path / "ints.npz"), SIGNATURE, "Tiny")
    assert arrays["x"].dtype == np.float32
    np.testing.assert_array_equal(arrays["x"], np.rint(a["x"] * 10))


def test_csv_trains_end_to_end(tmp_path, capsys):
    a = tiny_arrays(40)
    rows = ["y,a,b,c,d"] + [
        f"{t},{','.join(map(str, r))}" for r, t in zip(a["x"], a["y"], strict=True)
    ]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    assert train_cli(tmp_path, str(tmp_path / "d.csv"), "--epochs", "1") == 0
    assert "on 36 examples, 4 validation" in capsys.readouterr().err  # default --val-split 0.1


# -- bad data: exit 1, a message that names the array and both shapes ---------------------------


def _bad(tmp_path, capsys, arrays: dict | None = None, path: str | None = None) -> str:
    if arrays is not None:
        np.savez(tmp_path / "bad.npz", **arrays)
        path = str(tmp_path / "bad.npz")
    assert path is not None
    assert train_cli(tmp_path, path) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "trainer.pt").exists()
    return err


def test_wrong_shape_names_array_and_both_shapes(tmp_path, capsys):
    a = tiny_arrays(16)
    err = _bad(tmp_path, capsys, {"x": a["x"][:, :3], "y": a["y"]})
    assert "array 'x' has shape (16, 3), but the spec declares x: float32[N, 4]" in err
    assert "hint: dimension 1 must be 4" in err


def test_symbolic_dim_binds_across_arrays(tmp_path, capsys):
    a = tiny_arrays(16)
    err = _bad(tmp_path, capsys, {"x": a["x"], "y": a["y"][:15]})
    assert "array 'y' has shape (15,), but the spec declares y: int64[N]" in err
    assert "N is 16 in array 'x' but 15 here" in err


def test_wrong_rank(tmp_path, capsys):
    a = tiny_arrays(16)
    err = _bad(tmp_path, capsys, {"x": a["x"][:, :, None], "y": a["y"]})
    assert "array 'x' has shape (16, 4, 1)" in err and "needs 2 dimensions" in err


def test_float_labels_are_refused(tmp_path, capsys):
    a = tiny_arrays(16)
    err = _bad(tmp_path, capsys, {"x": a["x"], "y": a["y"].astype(np.float32)})
    assert "array 'y' has dtype float32, but the spec declares int64" in err
    assert "floats are refused" in err


def test_missing_array(tmp_path, capsys):
    err = _bad(tmp_path, capsys, {"x": tiny_arrays(16)["x"]})
    assert "bad.npz has no array 'y' (model Tiny declares y: int64[N])" in err


def test_unknown_array(tmp_path, capsys):
    a = tiny_arrays(16)
    err = _bad(tmp_path, capsys, {**a, "lable": a["y"]})
    assert "array 'lable' is not an input or target of model Tiny" in err


def test_truncated_npz(tmp_path, capsys):
    np.savez(tmp_path / "t.npz", **tiny_arrays(64))
    raw = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(raw[: len(raw) // 2])
    err = _bad(tmp_path, capsys, path=str(tmp_path / "t.npz"))
    assert "cannot read" in err and "truncated or corrupt" in err


def test_truncated_idx(tmp_path, capsys):
    write_idx(tmp_path / "images-idx3-ubyte", np.zeros((5, 2, 2), np.uint8))
    write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(5, np.uint8))
    raw = (tmp_path / "images-idx3-ubyte").read_bytes()
    (tmp_path / "images-idx3-ubyte").write_bytes(raw[:-3])
    err = _bad(tmp_path, capsys, path=str(tmp_path))
    assert "promises 20 bytes of data for shape (5, 2, 2), the file holds 17" in err


def test_ragged_csv(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("y,a,b,c,d\n1,1,2,3,4\n2,1,2\n")
    err = _bad(tmp_path, capsys, path=str(tmp_path / "d.csv"))
    assert "d.csv:3: 3 fields, the header has 5" in err


def test_missing_file_and_unknown_format(tmp_path, capsys):
    assert "data file" in _bad(tmp_path, capsys, path=str(tmp_path / "nope.npz"))
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    assert "unknown format '.parquet'" in _bad(tmp_path, capsys, path=str(tmp_path / "d.parquet"))


def test_text_needs_a_token_model(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("some text")
    err = _bad(tmp_path, capsys, path=str(tmp_path / "t.txt"))
    assert "a text file trains a model with one i64[N, T] input" in err
