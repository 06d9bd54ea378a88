"""`dslc run`: run an exported ONNX model in onnxruntime on inputs read from .npy/.npz files.

The CLI parses the arguments; this module reads the inputs, opens an onnxruntime session on the
asked provider, checks the inputs against the model's signature (names, ranks, fixed and
symbolic dims, dtypes) before running, and formats or saves the outputs. Every failure that is
the user's to fix becomes a DslcError."""

from __future__ import annotations

import difflib
import json
import os
import re
import zipfile

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from dslc import untrusted
from dslc.errors import DslcError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

# onnxruntime's exceptions share no base class but Exception; these are the ones it raises.
_ORT_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls for cls in vars(_ort_state).values() if isinstance(cls, type) and issubclass(cls, Exception)
)

# The numpy dtype of each onnxruntime tensor type that numpy has (no bfloat16, no float8).
_SAME_NAME = "float16 int8 int16 int32 int64 uint8 uint16 uint32 uint64 bool".split()
_ORT_DTYPES = {f"tensor({name})": np.dtype(name) for name in _SAME_NAME}
_ORT_DTYPES |= {"tensor(float)": np.dtype("float32"), "tensor(double)": np.dtype("float64")}


def parse_input_args(specs: list[str]) -> dict[str, np.ndarray]:
    """Read each `name=path` (a .npy file, or an .npz holding one array or one called `name`)."""
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise DslcError(f"bad --input '{spec}'", hint="write it as NAME=FILE.npy, e.g. x=x.npy")
        if name in inputs:
            raise DslcError(f"input '{name}' is given more than once")
        inputs[name] = _load_array(name, path)
    return inputs


def _not_a_file(path: str) -> str:
    return "is not a file" if os.path.exists(path) else "does not exist"


def _load_array(name: str, path: str) -> np.ndarray:
    """The array of `path`, after its size, zip members and .npy headers are checked against
    the bytes that are there (untrusted.py): a 1 KB file cannot make numpy allocate terabytes."""
    if not os.path.isfile(path):
        raise DslcError(f"input file '{path}' for '{name}' {_not_a_file(path)}")
    arrays = untrusted.read_arrays(path, f"input file '{path}'")
    if name in arrays:
        return arrays[name]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    listed = ", ".join(arrays) or "none"
    raise DslcError(
        f"'{path}' holds {len(arrays)} arrays ({listed}) and none is called '{name}'",
        hint="save one array per file, or name the array after the input",
    )


def open_session(model_path: str, provider: str = "cpu") -> ort.InferenceSession:
    """An onnxruntime session on `provider` ("cpu" or "cuda"), or a DslcError saying why not."""
    if provider not in PROVIDERS:
        raise DslcError(f"unknown provider '{provider}' (choose from {', '.join(PROVIDERS)})")
    providers = ["CPUExecutionProvider"]
    if provider == "cuda":
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise DslcError(
                "the CUDA provider is not available in this onnxruntime "
                f"(available: {', '.join(available)})",
                hint="install onnxruntime-gpu (instead of onnxruntime) on a machine with a GPU",
            )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if not os.path.isfile(model_path):
        raise DslcError(f"model file '{model_path}' {_not_a_file(model_path)}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model_path, options, providers=providers)
    except _ORT_ERRORS as e:
        raise DslcError(
            f"onnxruntime cannot load '{model_path}': {_ort_message(e)}",
            hint="is it an ONNX model exported by dslc?",
        ) from None
    if provider == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise DslcError(
            "the CUDA provider could not be started "
            f"(onnxruntime fell back to {', '.join(session.get_providers())})",
            hint="check that the CUDA and cuDNN libraries match this onnxruntime-gpu",
        )
    return session


MISSING = object()  # what metadata_json gives for a key the model's metadata does not have


def metadata_json(model_path: str, key: str) -> object:
    """The JSON value of the model's metadata entry `key` (None where it is not JSON), or
    MISSING: what `dslc train --export-onnx` and the ONNX backend record (class names, which
    outputs are detections)."""
    meta = open_session(model_path).get_modelmeta().custom_metadata_map
    if key not in meta:
        return MISSING
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        return None


def _ort_message(error: BaseException) -> str:
    """onnxruntime's message without its `[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : ` prefix."""
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(error)).strip()


def _dtype_name(ort_type: str) -> str:
    """float32 for 'tensor(float)'; onnxruntime's own name where numpy has no such dtype."""
    return _ORT_DTYPES[ort_type].name if ort_type in _ORT_DTYPES else ort_type


def _format_shape(dims: tuple | list) -> str:
    """(N, 1, 32, 32) for a model's dims (None prints as ?), (5,) and () as numpy writes them."""
    names = ["?" if d is None else str(d) for d in dims]
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


def check_inputs(session: ort.InferenceSession, inputs: dict[str, np.ndarray]) -> None:
    """Raise one DslcError listing every way `inputs` do not fit the model's inputs."""
    expected = {arg.name: arg for arg in session.get_inputs()}
    problems: list[str] = []
    hints: list[str] = []
    for name in [name for name in inputs if name not in expected]:
        close = difflib.get_close_matches(name, list(expected), n=1)
        guess = f"; did you mean '{close[0]}'?" if close else ""
        problems.append(f"unknown input '{name}' (the model takes {', '.join(expected)}){guess}")
    bound: dict[str, tuple[int, str]] = {}  # symbolic dim -> (size, the input that set it)
    for name, arg in expected.items():
        if name not in inputs:
            problems.append(
                f"missing input '{name}': {_dtype_name(arg.type)} {_format_shape(arg.shape)}"
            )
            hints.append(f"pass it with --input {name}=FILE.npy")
            continue
        shape_problem = _check_shape(name, inputs[name].shape, arg.shape, bound)
        if shape_problem:
            problems.append(shape_problem)
        want = _ORT_DTYPES.get(arg.type)
        have = inputs[name].dtype
        if want is not None and have != want:
            dtype = _dtype_name(arg.type)
            problems.append(
                f"input '{name}' has dtype {have} but the model expects {dtype} ({arg.type})"
            )
            hints.append(f"{name}.astype(np.{dtype})")
    if problems:
        message = problems[0] if len(problems) == 1 else "\n  ".join(["bad inputs:", *problems])
        raise DslcError(message, hint="; ".join(hints) or None)


def _check_shape(
    name: str, shape: tuple[int, ...], dims: list, bound: dict[str, tuple[int, str]]
) -> str | None:
    """A problem with `name`'s shape against the model's `dims`; binds symbolic dims in `bound`."""
    if len(shape) != len(dims):
        why = f"rank {len(shape)} instead of {len(dims)}"
    else:
        reasons = []
        for axis, (size, dim) in enumerate(zip(shape, dims, strict=True)):
            if isinstance(dim, int) and dim >= 0 and size != dim:
                reasons.append(f"dim {axis} is {size}, not {dim}")
            elif isinstance(dim, str) and bound.setdefault(dim, (size, name))[0] != size:
                other_size, other = bound[dim]
                where = "earlier in this input" if other == name else f"in input '{other}'"
                reasons.append(f"{dim} is {size} here but {other_size} {where}")
        why = "; ".join(reasons)
    if not why:
        return None
    return (
        f"input '{name}' has shape {_format_shape(shape)} "
        f"but the model expects {_format_shape(dims)}: {why}"
    )


def run_model(
    model_path: str, inputs: dict[str, np.ndarray], provider: str = "cpu"
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Run the model; its outputs in the model's order, and the providers the session used."""
    session = open_session(model_path, provider)
    check_inputs(session, inputs)
    names = [out.name for out in session.get_outputs()]
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a failure is raised as a DslcError: no log line as well
    try:
        results = session.run(names, inputs, quiet)
    except _ORT_ERRORS as e:
        raise DslcError(f"onnxruntime failed running '{model_path}': {_ort_message(e)}") from None
    return dict(zip(names, results, strict=True)), session.get_providers()


def format_outputs(outputs: dict[str, np.ndarray], max_values: int = 6) -> str:
    """One line per output: `name: dtype (shape) [first values, ...]`."""
    lines = []
    for name, array in outputs.items():
        array = np.asarray(array)
        flat = array.reshape(-1)
        values = [_format_value(v) for v in flat[:max_values]]
        if flat.size > max_values:
            values.append("...")
        lines.append(f"{name}: {array.dtype} {_format_shape(array.shape)} [{', '.join(values)}]")
    return "\n".join(lines)


def _format_value(value: np.generic) -> str:
    """4 significant digits: 0.01235, -0.5, 3.0; scientific (1.235e+05) outside 1e-4..1e5."""
    if isinstance(value, np.floating):
        if not np.isfinite(value) or value == 0 or 1e-4 <= abs(value) < 1e5:
            return np.format_float_positional(value, precision=4, fractional=False, trim="0")
        return np.format_float_scientific(value, precision=3, trim="0")
    if isinstance(value, np.bool_ | np.integer):
        return str(value)
    return repr(value.item())


def save_outputs(path: str, outputs: dict[str, np.ndarray]) -> None:
    """Write the outputs to an .npz at exactly `path`, one array per output name."""
    # np.savez, by hand: np.savez(path, **outputs) adds '.npz' to the path, fails on an output
    # called 'file', and pickles object (string) arrays.
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in outputs.items():
                array = np.asarray(array)
                if array.dtype == object:
                    array = array.astype(np.str_)
                with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, array, allow_pickle=False)
    except OSError as e:
        raise DslcError(f"cannot write outputs to '{path}': {e.strerror or e}") from None
