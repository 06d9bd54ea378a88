"""Load trained weights into plain numpy arrays without importing torch.

The ONNX path of dslc must run where torch is absent, yet users hand it the files that
`torch.save(model.state_dict(), path)` writes. Those are zip archives holding a pickle
(`data.pkl`) plus one raw storage file per tensor (`data/<key>`). Unpickling them with
`pickle`/`torch.load` could run arbitrary code, so this module reads the archive itself
with a restricted unpickler that knows only the few globals a state_dict references and
turns each tensor into a numpy array. `.safetensors` files go through safetensors' numpy API.
"""

from __future__ import annotations

import collections
import functools
import io
import math
import operator
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dslc import untrusted
from dslc.errors import DslcError

_SAVE_HINT = "save only the weights: torch.save(model.state_dict(), path), or a .safetensors file"
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)  # pre-1.6 torch.save files


class _StorageType(NamedTuple):
    """Stand-in for a torch storage class such as `torch.FloatStorage`: its element type.
    bfloat16 is read as uint16 bit patterns, widened to float32 at the end. (Immutable, so
    a pickle's BUILD opcode cannot alter these shared markers.)"""

    dtype: np.dtype
    bfloat16: bool = False


class _Storage(NamedTuple):
    """The flat, read-only elements of one storage file in the archive."""

    data: np.ndarray
    bfloat16: bool


_STORAGE_DTYPES = {  # torch storage class name -> little-endian element type
    "Float": "<f4", "Double": "<f8", "Half": "<f2", "BFloat16": "<u2", "Long": "<i8",
    "Int": "<i4", "Short": "<i2", "Char": "i1", "Byte": "u1", "Bool": "?", "Untyped": "u1",
}  # fmt: skip
_STORAGE_TYPES = {
    f"{name}Storage": _StorageType(np.dtype(code), bfloat16=name == "BFloat16")
    for name, code in _STORAGE_DTYPES.items()
}


# A tensor view may hold more elements than its storage (a stride-0 view, as of expand())
# only up to this many: past it, a 1 KB file could ask for gigabytes (docs/limits.md).
MAX_EXPANDED_ELEMENTS = 1 << 24
# All the tensors together may take at most this many times the bytes of their storages, plus
# MAX_EXPANDED_ELEMENTS float64s: tied weights are views of one storage under two keys.
MAX_SHARING = 4


class _Refused(ValueError):
    """A tensor layout that is well formed but would materialize too much; said as refused,
    not as corrupt."""


class _Budget:
    """The bytes the tensors may still take, so that many views of one storage cannot add up
    to more than MAX_SHARING times the file's data."""

    def __init__(self, storage_bytes: int) -> None:
        self.left = MAX_SHARING * storage_bytes + MAX_EXPANDED_ELEMENTS * 8

    def spend(self, nbytes: int, shape: tuple[int, ...]) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise _Refused(
                f"its tensors (the last of shape {shape}) would take more than {MAX_SHARING} "
                "times the bytes of the storages they view"
            )


def _rebuild_tensor(
    storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any, budget: _Budget
) -> np.ndarray:
    """Stand-in for `torch._utils._rebuild_tensor_v2`: a contiguous copy of a strided view,
    after the view's extent and element count are checked, before anything is allocated."""
    if not isinstance(storage, _Storage):
        raise ValueError("a tensor refers to something other than a storage")
    offset = operator.index(offset)
    shape = tuple(operator.index(n) for n in size)
    steps = tuple(operator.index(s) for s in stride)
    if len(shape) != len(steps) or min((offset, *shape, *steps)) < 0:
        raise ValueError(f"bad tensor layout: offset {offset}, size {shape}, stride {steps}")
    data = storage.data
    numel = math.prod(shape)
    if numel > data.size and numel > MAX_EXPANDED_ELEMENTS:
        raise _Refused(
            f"a tensor of shape {shape} views a storage of {data.size} elements (stride "
            f"{steps}); a view may expand its storage to at most {MAX_EXPANDED_ELEMENTS:,} "
            "elements"
        )
    budget.spend(numel * data.itemsize * (2 if storage.bfloat16 else 1), shape)
    if numel == 0:
        array = np.zeros(shape, data.dtype)
    else:
        end = offset + sum((n - 1) * s for n, s in zip(shape, steps, strict=True)) + 1
        if end > data.size:
            raise ValueError(f"a tensor reaches past the end of its storage ({end} > {data.size})")
        view = np.lib.stride_tricks.as_strided(
            data[offset:], shape, tuple(s * data.itemsize for s in steps), writeable=False
        )
        array = np.array(view, order="C")
    if storage.bfloat16:
        widened = array.astype(np.uint32)  # ufuncs would turn a 0-d array into a scalar
        np.left_shift(widened, 16, out=widened)
        array = widened.view(np.float32)
    return array


def _rebuild_parameter(data: Any, *_rest: Any) -> Any:
    """Stand-in for `torch._utils._rebuild_parameter`: an nn.Parameter is just its data."""
    return data


_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "UntypedStorage"): _STORAGE_TYPES["UntypedStorage"],
    **{("torch", name): kind for name, kind in _STORAGE_TYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles `data.pkl`, resolving only `_GLOBALS` and reading storages from the zip."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, path: Path, data_bytes: int) -> None:
        info = archive.getinfo(prefix + "data.pkl")
        if info.file_size > untrusted.limit("pickle"):
            raise untrusted.too_large(f"{path}: member {info.filename}", info.file_size, "pickle")
        self._pickle = archive.read(info)
        super().__init__(io.BytesIO(self._pickle))
        self._archive, self._prefix, self._path = archive, prefix, path
        self._storages: dict[str, _Storage] = {}
        self._budget = _Budget(data_bytes)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):  # counted against the budget
            return functools.partial(_rebuild_tensor, budget=self._budget)
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        whole_model = module.startswith("torch.nn.") or b"torch.nn.modules" in self._pickle
        hint = (
            "this looks like a whole model saved with torch.save(model); " + _SAVE_HINT
            if whole_model
            else _SAVE_HINT
        )
        raise DslcError(
            f"{self._path} holds `{module}.{name}`, not only tensors; refused, since dslc "
            "loads weights safely and never unpickles arbitrary objects",
            hint=hint,
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ValueError(f"unknown persistent id {pid!r}")
        kind, key, numel = pid[1], str(pid[2]), operator.index(pid[4])
        if not isinstance(kind, _StorageType):
            raise ValueError(f"unknown storage type {kind!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}data/{key}")
            data = np.frombuffer(raw, kind.dtype, count=len(raw) // kind.dtype.itemsize)
            if data.size < numel:
                raise ValueError(f"storage {key} holds {data.size} elements, expected {numel}")
            self._storages[key] = _Storage(data, kind.bfloat16)
        return self._storages[key]


def load_weights(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a `torch.save(model.state_dict())` file or a `.safetensors` file, without torch.

    Returns `{name: array}` in the file's order; every array is a contiguous, writable copy.
    numpy has no bfloat16, so bfloat16 tensors of a torch file come back as float32 (exact).
    Raises DslcError for anything a user can get wrong, and for files that hold more than
    tensors (a pickle that would need arbitrary classes is refused, never executed)."""
    path = Path(path)
    try:
        untrusted.check_size(path, "weights")
        with path.open("rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise DslcError(f"weights file {path} does not exist") from None
    except OSError as exc:
        raise DslcError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        return _load_safetensors(path)
    if head.startswith(b"PK"):
        return _load_torch_zip(path)
    if head.startswith(_LEGACY_MAGIC):
        raise DslcError(
            f"{path} uses the legacy (pre-1.6) torch.save format, which dslc cannot read safely",
            hint="re-save it with a current torch: torch.save(torch.load(old), new)",
        )
    raise DslcError(
        f"{path} is neither a PyTorch state_dict (torch.save zip) nor a .safetensors file",
        hint=_SAVE_HINT,
    )


def _looks_like_safetensors(head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON object."""
    return len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a bad file
        hint = "numpy has no bfloat16: save float32 tensors" if "bfloat16" in str(exc) else None
        raise DslcError(f"cannot read safetensors file {path}: {exc}", hint=hint) from None
    return {k: v if v.flags.writeable else v.copy() for k, v in tensors.items()}


def _load_torch_zip(path: Path) -> dict[str, np.ndarray]:
    """The state_dict of a torch.save zip: its members' declared sizes and compression are
    checked before any is read, each tensor's layout before it is copied out."""
    try:
        with zipfile.ZipFile(path) as archive:
            data_bytes = untrusted.check_zip(archive, path, "weights")
            prefix = _archive_prefix(archive, path)
            result = _StateDictUnpickler(archive, prefix, path, data_bytes).load()
    except DslcError:
        raise
    except _Refused as exc:
        hint = "save contiguous tensors: {k: v.contiguous() for k, v in state_dict.items()}"
        raise DslcError(f"{path}: {exc}; refused", hint=hint) from None
    except Exception as exc:  # a damaged archive or pickle fails in many ways; report them all
        msg = f"{path} is not a readable torch.save file (truncated or corrupt?): {exc}"
        raise DslcError(msg) from None
    return _check_tensor_dict(result, path)


def _archive_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    """The archive's top folder (`<prefix>/data.pkl`), after checking its byte order."""
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pickles:
        raise DslcError(f"{path} is a zip archive but not a torch.save file (no data.pkl)")
    prefix = pickles[0].removesuffix("data.pkl")
    order = archive.read(prefix + "byteorder").strip() if prefix + "byteorder" in names else b""
    if order not in (b"", b"little"):  # files without the entry predate it: little-endian
        raise DslcError(f"{path} was saved on a big-endian machine; dslc reads little-endian only")
    return prefix


def _check_tensor_dict(obj: Any, path: Path) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise DslcError(f"{path} holds a {type(obj).__name__}, not a dict of tensors", _SAVE_HINT)
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            what = (
                "a nested dict (a checkpoint?)" if isinstance(value, dict) else type(value).__name__
            )
            raise DslcError(f"{path}: entry {key!r} is {what}, not a tensor", _SAVE_HINT)
    return dict(obj)
