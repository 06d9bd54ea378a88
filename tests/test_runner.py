"""dslc.runtime.run: reading inputs, checking them against an ONNX model, running it in onnxruntime,
formatting and saving the outputs. The models are built here with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dslc.errors import DslcError
from dslc.runtime import run as runner
from dslc.runtime.run import (
    check_inputs,
    format_outputs,
    open_session,
    parse_input_args,
    run_model,
    save_outputs,
)

RNG = np.random.default_rng(0)
W = RNG.standard_normal((3, 4)).astype(np.float32)
B = RNG.standard_normal(4).astype(np.float32)


def _save_model(path: Path, nodes: list, inputs: list, outputs: list) -> str:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        outputs,
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b")],
    )
    # onnxruntime 1.31 refuses onnx 1.23's default ir_version (14).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)


@pytest.fixture
def dense_model(tmp_path: Path) -> str:
    """y = Relu(x @ W + b), x: float[N, 3] -> y: float[N, 4]."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["z"]),
        helper.make_node("Relu", ["z"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    return _save_model(tmp_path / "dense.onnx", nodes, [x], [y])


@pytest.fixture
def masked_model(tmp_path: Path) -> str:
    """y = Relu(x @ W + b) * mask, x: float[N, 3], mask: float[N, 4]; two outputs y and z."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["z"]),
        helper.make_node("Relu", ["z"], ["r"]),
        helper.make_node("Mul", ["r", "mask"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 4]),
    ]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
        helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4]),
    ]
    return _save_model(tmp_path / "masked.onnx", nodes, inputs, outputs)


def _error(fn, *args) -> DslcError:
    with pytest.raises(DslcError) as info:
        fn(*args)
    return info.value


def _x(n: int, dtype=np.float32) -> np.ndarray:
    return RNG.standard_normal((n, 3)).astype(dtype)


# run_model


@pytest.mark.parametrize("batch", [1, 5])
def test_run_model_matches_numpy(dense_model: str, batch: int) -> None:
    x = _x(batch)
    outputs, providers = run_model(dense_model, {"x": x})
    assert list(outputs) == ["y"]
    assert outputs["y"].shape == (batch, 4)
    np.testing.assert_allclose(outputs["y"], np.maximum(x @ W + B, 0), rtol=1e-5, atol=1e-6)
    assert providers == ["CPUExecutionProvider"]


def test_run_model_two_inputs_outputs_in_model_order(masked_model: str) -> None:
    x = _x(2)
    mask = np.array([[1, 0, 1, 0], [0, 1, 1, 1]], dtype=np.float32)
    outputs, _ = run_model(masked_model, {"mask": mask, "x": x})
    assert list(outputs) == ["y", "z"]
    np.testing.assert_allclose(outputs["z"], x @ W + B, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["y"], np.maximum(x @ W + B, 0) * mask, atol=1e-6)


def test_run_model_checks_inputs_before_running(dense_model: str) -> None:
    err = _error(run_model, dense_model, {"x": _x(2, np.float64)})
    assert "dtype float64" in err.message


def test_run_model_runtime_failure(tmp_path: Path) -> None:
    shape = numpy_helper.from_array(np.array([2, 2], np.int64), "shape")
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])
    graph = helper.make_graph([node], "g", [x], [y], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.save(model, tmp_path / "reshape.onnx")
    path = str(tmp_path / "reshape.onnx")
    np.testing.assert_array_equal(
        run_model(path, {"x": np.arange(4.0, dtype=np.float32)})[0]["y"], [[0, 1], [2, 3]]
    )
    err = _error(run_model, path, {"x": np.ones(3, np.float32)})
    assert err.message.startswith(f"onnxruntime failed running '{path}': ")
    assert "[ONNXRuntimeError]" not in err.message


# parse_input_args


def test_parse_input_args_reads_npy_and_npz(tmp_path: Path) -> None:
    x, m, extra = _x(2), np.ones((2, 4), np.float32), np.zeros(3)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "single.npz", whatever=m)
    np.savez(tmp_path / "named.npz", other=extra, mask=m)
    got = parse_input_args(
        [
            f"x={tmp_path / 'x.npy'}",
            f"m={tmp_path / 'single.npz'}",
            f"mask={tmp_path / 'named.npz'}",
        ]
    )
    assert list(got) == ["x", "m", "mask"]
    np.testing.assert_array_equal(got["x"], x)
    np.testing.assert_array_equal(got["m"], m)
    np.testing.assert_array_equal(got["mask"], m)
    assert got["x"].dtype == np.float32


def test_parse_input_args_npz_with_several_arrays_and_no_match(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=np.zeros(1), b=np.zeros(2))
    err = _error(parse_input_args, [f"x={tmp_path / 'two.npz'}"])
    assert "2 arrays (a, b)" in err.message and "'x'" in err.message


def test_parse_input_args_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", _x(1))
    x_npy = str(tmp_path / "x.npy")
    for bad in ["x.npy", "=x.npy", "x="]:
        err = _error(parse_input_args, [bad])
        assert f"bad --input '{bad}'" in err.message
        assert err.hint is not None and "NAME=FILE.npy" in err.hint
    err = _error(parse_input_args, [f"x={tmp_path / 'nope.npy'}"])
    assert "does not exist" in err.message and "nope.npy" in err.message
    err = _error(parse_input_args, [f"x={x_npy}", f"x={x_npy}"])
    assert err.message == "input 'x' is given more than once"


def test_parse_input_args_refuses_pickled_object_arrays(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "obj.npz", x=np.array([1, None], dtype=object))
    for name in ["obj.npy", "obj.npz"]:
        err = _error(parse_input_args, [f"x={tmp_path / name}"])
        assert "object array" in err.message and name in err.message


def test_parse_input_args_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "text.npy").write_text("not numpy at all")
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "cut.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    err = _error(parse_input_args, [f"x={tmp_path / 'text.npy'}"])
    assert "is not a NumPy .npy or .npz file" in err.message
    err = _error(parse_input_args, [f"x={tmp_path / 'empty.npy'}"])
    assert "is not a NumPy .npy or .npz file" in err.message
    err = _error(parse_input_args, [f"x={tmp_path / 'cut.npy'}"])
    assert err.message.startswith("cannot read input file") and "cut.npy" in err.message
    err = _error(parse_input_args, [f"x={tmp_path}"])
    assert err.message == f"input file '{tmp_path}' for 'x' is not a file"


# check_inputs


def test_check_inputs_accepts_any_size_for_a_symbolic_dim(masked_model: str) -> None:
    session = open_session(masked_model)
    for n in [1, 7]:
        check_inputs(session, {"x": _x(n), "mask": np.ones((n, 4), np.float32)})


def test_check_inputs_missing_input(masked_model: str) -> None:
    err = _error(check_inputs, open_session(masked_model), {"x": _x(2)})
    assert err.message == "missing input 'mask': float32 (N, 4)"
    assert err.hint == "pass it with --input mask=FILE.npy"


def test_check_inputs_unknown_input_did_you_mean(masked_model: str) -> None:
    inputs = {"x": _x(2), "mask": np.ones((2, 4), np.float32), "msk": np.ones(1)}
    err = _error(check_inputs, open_session(masked_model), inputs)
    assert err.message == "unknown input 'msk' (the model takes x, mask); did you mean 'mask'?"
    inputs = {"x": _x(2), "mask": np.ones((2, 4), np.float32), "zzzz": np.ones(1)}
    err = _error(check_inputs, open_session(masked_model), inputs)
    assert "unknown input 'zzzz'" in err.message and "did you mean" not in err.message


def test_check_inputs_wrong_rank(dense_model: str) -> None:
    err = _error(check_inputs, open_session(dense_model), {"x": np.ones(3, np.float32)})
    assert err.message == (
        "input 'x' has shape (3,) but the model expects (N, 3): rank 1 instead of 2"
    )


def test_check_inputs_wrong_fixed_dim(dense_model: str) -> None:
    err = _error(check_inputs, open_session(dense_model), {"x": np.ones((2, 5), np.float32)})
    assert (
        err.message == "input 'x' has shape (2, 5) but the model expects (N, 3): dim 1 is 5, not 3"
    )


def test_check_inputs_wrong_dtype_with_astype_hint(dense_model: str) -> None:
    err = _error(check_inputs, open_session(dense_model), {"x": _x(2, np.float64)})
    assert err.message == (
        "input 'x' has dtype float64 but the model expects float32 (tensor(float))"
    )
    assert err.hint == "x.astype(np.float32)"


def test_check_inputs_symbol_bound_to_two_sizes(masked_model: str) -> None:
    inputs = {"x": _x(2), "mask": np.ones((4, 4), np.float32)}
    err = _error(check_inputs, open_session(masked_model), inputs)
    assert err.message == (
        "input 'mask' has shape (4, 4) but the model expects (N, 4): N is 4 here but 2 in input 'x'"
    )


def test_check_inputs_reports_all_problems_together(masked_model: str) -> None:
    inputs = {"x": np.ones((2, 5)), "maks": np.ones((2, 4), np.float32)}
    err = _error(check_inputs, open_session(masked_model), inputs)
    assert err.message.splitlines() == [
        "bad inputs:",
        "  unknown input 'maks' (the model takes x, mask); did you mean 'mask'?",
        "  input 'x' has shape (2, 5) but the model expects (N, 3): dim 1 is 5, not 3",
        "  input 'x' has dtype float64 but the model expects float32 (tensor(float))",
        "  missing input 'mask': float32 (N, 4)",
    ]
    assert err.hint == "x.astype(np.float32); pass it with --input mask=FILE.npy"
    assert err.render().startswith("dslc: error: bad inputs:\n  unknown input 'maks'")


def test_check_inputs_unnamed_dynamic_dim(tmp_path: Path) -> None:
    node = helper.make_node("Identity", ["x"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [None, 2])
    session = open_session(_save_model(tmp_path / "id.onnx", [node], [x], [y]))
    check_inputs(session, {"x": np.zeros((9, 2), np.int64)})
    err = _error(check_inputs, session, {"x": np.zeros((9, 3), np.int32)})
    assert err.message.splitlines()[1:] == [
        "  input 'x' has shape (9, 3) but the model expects (?, 2): dim 1 is 3, not 2",
        "  input 'x' has dtype int32 but the model expects int64 (tensor(int64))",
    ]


# open_session


def test_cuda_provider_on_this_machine(dense_model: str) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        session = open_session(dense_model, "cuda")
        assert session.get_providers()[0] == "CUDAExecutionProvider"
        return
    err = _error(open_session, dense_model, "cuda")
    assert "CUDA provider is not available" in err.message
    assert "CPUExecutionProvider" in err.message  # lists what is available
    assert err.hint is not None and "onnxruntime-gpu" in err.hint


def test_cuda_provider_missing(dense_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    err = _error(open_session, dense_model, "cuda")
    assert err.message == (
        "the CUDA provider is not available in this onnxruntime (available: CPUExecutionProvider)"
    )


def test_cuda_provider_that_falls_back_to_cpu(
    dense_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime-gpu without working CUDA libraries quietly runs on the CPU: dslc says so."""

    class CpuOnlySession:
        def __init__(self, path, options, providers):
            assert providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def get_providers(self) -> list[str]:
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(
        runner.ort,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.setattr(runner.ort, "InferenceSession", CpuOnlySession)
    err = _error(open_session, dense_model, "cuda")
    assert "CUDA provider could not be started" in err.message


def test_unknown_provider_rejected(dense_model: str) -> None:
    err = _error(open_session, dense_model, "tpu")
    assert err.message == "unknown provider 'tpu' (choose from cpu, cuda)"


def test_missing_and_garbage_model_files(tmp_path: Path) -> None:
    err = _error(open_session, str(tmp_path / "nope.onnx"))
    assert err.message == f"model file '{tmp_path / 'nope.onnx'}' does not exist"
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 this is not a protobuf \xff\xfe")
    err = _error(open_session, str(garbage))
    assert err.message.startswith(f"onnxruntime cannot load '{garbage}': ")
    assert "[ONNXRuntimeError]" not in err.message
    err = _error(run_model, str(garbage), {})
    assert "cannot load" in err.message
    err = _error(open_session, str(tmp_path))
    assert err.message == f"model file '{tmp_path}' is not a file"


# format_outputs


def test_format_outputs_exact() -> None:
    outputs = {
        "logits": np.array([[0.0123456, -0.5, 3.0], [123456.7, 1e-5, 0.0]], dtype=np.float32),
        "ids": np.array([3, 1], dtype=np.int64),
        "flag": np.array(True),
        "none": np.zeros((0, 2), np.float32),
    }
    assert format_outputs(outputs) == (
        "logits: float32 (2, 3) [0.01235, -0.5, 3.0, 1.235e+05, 1.0e-05, 0.0]\n"
        "ids: int64 (2,) [3, 1]\n"
        "flag: bool () [True]\n"
        "none: float32 (0, 2) []"
    )


def test_format_outputs_truncates() -> None:
    outputs = {"y": np.arange(10, dtype=np.float64).reshape(2, 5) / 4}
    assert format_outputs(outputs) == "y: float64 (2, 5) [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, ...]"
    assert format_outputs(outputs, max_values=2) == "y: float64 (2, 5) [0.0, 0.25, ...]"
    assert format_outputs({"y": np.ones(6)}, max_values=6).endswith("1.0]")


# save_outputs


def test_save_outputs_round_trips(tmp_path: Path) -> None:
    outputs = {"y": _x(4), "file": np.arange(3), "names": np.array(["a", "bc"], dtype=object)}
    path = tmp_path / "out"  # no .npz suffix: written exactly there
    save_outputs(str(path), outputs)
    with np.load(path, allow_pickle=False) as npz:
        assert npz.files == ["y", "file", "names"]
        np.testing.assert_array_equal(npz["y"], outputs["y"])
        assert npz["y"].dtype == np.float32
        np.testing.assert_array_equal(npz["file"], np.arange(3))
        assert npz["names"].tolist() == ["a", "bc"]


def test_save_outputs_os_error(tmp_path: Path) -> None:
    err = _error(save_outputs, str(tmp_path / "no" / "such" / "dir.npz"), {"y": np.ones(1)})
    assert err.message.startswith("cannot write outputs to ")
