"""dslc.backends.weights: torch-free, safe loading of state_dicts and safetensors files."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dslc.backends.weights import load_weights
from dslc.errors import DslcError

REPO_ROOT = Path(__file__).resolve().parents[1]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 5 * 5, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).flatten(1))


class _Evil:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def _trained_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = _Net().train()
    net(torch.randn(8, 3, 5, 5))  # moves BatchNorm's running stats and num_batches_tracked
    return net.state_dict()


def _assert_same(loaded: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(loaded) == list(expected)
    for key, want in expected.items():
        got = loaded[key]
        assert isinstance(got, np.ndarray), key
        assert got.dtype == want.dtype, key
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)
        assert got.flags.c_contiguous and got.flags.writeable, key


def _rewrite_zip(src: Path, dst: Path, change: dict[str, bytes]) -> None:
    """Copy a torch.save archive, replacing entries whose name ends with a key of `change`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            for suffix, new in change.items():
                if name.endswith(suffix):
                    data = new
            zout.writestr(name, data)


def test_round_trip_of_a_trained_module(tmp_path: Path) -> None:
    state = _trained_state_dict()
    assert state["bn.num_batches_tracked"].item() == 1
    path = tmp_path / "net.pt"
    torch.save(state, path)
    loaded = load_weights(path)
    _assert_same(loaded, {k: v.numpy() for k, v in state.items()})
    assert loaded["bn.num_batches_tracked"].shape == ()
    assert loaded["bn.num_batches_tracked"].dtype == np.int64
    assert not np.allclose(loaded["bn.running_mean"], 0.0)
    assert load_weights(str(path)).keys() == loaded.keys()  # str paths work too


def test_non_contiguous_and_offset_views(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32)
    tensors = {
        "transposed": torch.arange(12.0).reshape(3, 4).t(),
        "offset_view": base[5:11].view(2, 3),
        "strided": base[1::3],
        "expanded": torch.tensor([[1.0], [2.0]]).expand(2, 3),
        "base": base,
        "empty": torch.zeros(0, 3),
    }
    assert not tensors["transposed"].is_contiguous()
    assert tensors["offset_view"].storage_offset() == 5
    path = tmp_path / "views.pt"
    torch.save(tensors, path)
    loaded = load_weights(path)
    _assert_same(loaded, {k: v.contiguous().numpy() for k, v in tensors.items()})
    loaded["offset_view"][0, 0] = -1.0  # a copy: no aliasing with the shared storage
    assert loaded["base"][5] == 5.0


@pytest.mark.parametrize(
    "dtype",
    [torch.float16, torch.float64, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8],
)
def test_dtypes(tmp_path: Path, dtype: torch.dtype) -> None:
    tensors = {
        "m": (torch.arange(12) - 4).reshape(3, 4).to(dtype),
        "s": torch.tensor(7, dtype=dtype),
    }
    path = tmp_path / "t.pt"
    torch.save(tensors, path)
    _assert_same(load_weights(path), {k: v.numpy() for k, v in tensors.items()})


def test_bool(tmp_path: Path) -> None:
    tensors = {"mask": torch.tensor([[True, False, True], [False, False, True]]).t()}
    torch.save(tensors, tmp_path / "b.pt")
    _assert_same(load_weights(tmp_path / "b.pt"), {"mask": tensors["mask"].numpy()})


def test_bfloat16_becomes_float32(tmp_path: Path) -> None:
    t = torch.tensor([[1.5, -2.25, 3.0e38], [1.0e-3, 0.0, -0.0]], dtype=torch.bfloat16)
    torch.save({"w": t, "w_t": t.t(), "s": t[0, 1]}, tmp_path / "bf.pt")
    want = {"w": t.float().numpy(), "w_t": t.t().float().numpy(), "s": t[0, 1].float().numpy()}
    _assert_same(load_weights(tmp_path / "bf.pt"), want)


def test_parameters_saved_directly(tmp_path: Path) -> None:
    p = nn.Parameter(torch.randn(3, 2))
    torch.save({"p": p}, tmp_path / "p.pt")
    _assert_same(load_weights(tmp_path / "p.pt"), {"p": p.detach().numpy()})


def test_safetensors_from_torch_and_numpy(tmp_path: Path) -> None:
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import save_file as save_torch

    state = _trained_state_dict()
    save_torch(dict(state), tmp_path / "net.safetensors")
    loaded = load_weights(tmp_path / "net.safetensors")
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        assert loaded[key].dtype == value.numpy().dtype
        np.testing.assert_array_equal(loaded[key], value.numpy())
        assert loaded[key].flags.writeable

    arrays = {"a": np.arange(6, dtype=np.float64).reshape(2, 3), "i": np.array(3, np.int32)}
    save_numpy(arrays, str(tmp_path / "weights.bin"))  # detected by content, not extension
    loaded = load_weights(tmp_path / "weights.bin")
    assert sorted(loaded) == ["a", "i"]
    np.testing.assert_array_equal(loaded["a"], arrays["a"])
    assert loaded["i"].dtype == np.int32 and loaded["i"].shape == ()


def _refused(path: Path) -> DslcError:
    with pytest.raises(DslcError) as info:
        load_weights(path)
    assert str(path) in info.value.message
    return info.value


def test_refuses_arbitrary_objects_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "evil": _Evil(marker)}, path)
    error = _refused(path)
    assert "system" in error.message and "refused" in error.message
    assert "state_dict" in (error.hint or "")
    assert not marker.exists()


def test_refuses_hand_crafted_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    _rewrite_zip(good, tmp_path / "evil.pt", {"/data.pkl": payload})
    error = _refused(tmp_path / "evil.pt")
    assert "os.system" in error.message
    assert not marker.exists()


def test_refuses_a_whole_model(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(_Net(), path)
    error = _refused(path)
    assert "whole model" in (error.hint or "")
    assert "model.state_dict()" in (error.hint or "")


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        ({"epoch": 3, "state_dict": {"w": torch.ones(1)}}, "'epoch' is int"),
        ({"model": {"w": torch.ones(1)}}, "nested dict"),
        (torch.ones(2), "not a dict of tensors"),
        ({"storage": torch.ones(2).untyped_storage()}, "not a tensor"),
    ],
)
def test_refuses_pickles_that_are_not_a_dict_of_tensors(tmp_path: Path, obj, words: str) -> None:
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    assert words in _refused(path).message


def test_refuses_legacy_format(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert "legacy" in _refused(path).message


def test_refuses_damaged_files(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save(_trained_state_dict(), good)
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    _refused(tmp_path / "truncated.pt")

    _rewrite_zip(good, tmp_path / "short.pt", {"/data/0": b"\0" * 8})
    assert "storage" in _refused(tmp_path / "short.pt").message

    _rewrite_zip(good, tmp_path / "big.pt", {"/byteorder": b"big"})
    assert "big-endian" in _refused(tmp_path / "big.pt").message

    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    assert "no data.pkl" in _refused(tmp_path / "other.zip").message

    (tmp_path / "bad.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{not json")
    _refused(tmp_path / "bad.safetensors")


def test_refuses_text_and_missing_files(tmp_path: Path) -> None:
    text = tmp_path / "weights.txt"
    text.write_text("these are not weights\n")
    assert "neither" in _refused(text).message
    assert "does not exist" in _refused(tmp_path / "missing.pt").message
    (tmp_path / "empty.pt").write_bytes(b"")
    _refused(tmp_path / "empty.pt")


def test_loading_does_not_import_torch(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = _trained_state_dict()
    torch.save(state, tmp_path / "net.pt")
    save_file(dict(state), tmp_path / "net.safetensors")
    code = (
        "import sys\n"
        "from dslc.backends.weights import load_weights\n"
        "for p in sys.argv[1:]:\n"
        f"    assert len(load_weights(p)) == {len(state)}, p\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [str(tmp_path / "net.pt"), str(tmp_path / "net.safetensors")]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
