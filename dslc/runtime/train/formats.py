"""Readers for training data files: each turns a file into named numpy arrays, raising a
DslcError (never a traceback) for a missing, truncated or corrupt file.

- `.npz`: arrays named after the spec's inputs and targets.
- `.csv`: a header row; see `read_csv` for how columns become arrays.
- MNIST IDX files (`.gz` too): `images-idx3-ubyte:labels-idx1-ubyte`, one file per array in
  the spec's order (inputs, then targets), or a directory holding one images and one labels file.
- text (`.txt`): bytes become i64 tokens, cut into windows for a language model.
Checking the arrays against the spec is dslc.runtime.train.data's job."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path
from typing import IO, cast

import numpy as np

from dslc import untrusted
from dslc.errors import DslcError
from dslc.runtime.train import labels
from dslc.runtime.train.contract import Signature

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, after its zip members and .npy headers are checked against the
    limits and the bytes there (untrusted.py), so a small file cannot allocate terabytes."""
    if not path.exists():
        raise DslcError(f"data file {path} does not exist")
    return untrusted.read_arrays(path)


def _corrupt(path: Path, err: Exception) -> DslcError:
    return DslcError(f"cannot read {path} (truncated or corrupt?): {err}")


def read_csv(
    path: Path,
    signature: Signature,
    columns: dict[str, list[str]],
    classes: dict[str, list[str]] | None = None,
) -> dict:
    """Columns named in `columns` (array -> header names) or named after an array feed that
    array; the remaining columns, in file order, feed the one array not yet fed. A single
    column of names for an integer array (class labels such as 'setosa') becomes class
    indices, the names sorted; `classes` (array -> names) receives them, or when it holds
    the array already (the training file's), gives them."""
    header, rows = _csv_rows(path)
    mapping = {name: cols for name, cols in columns.items()}
    for name in signature:
        if name not in mapping and name in header:
            mapping[name] = [name]
    used = {c for cols in mapping.values() for c in cols}
    rest = [c for c in header if c not in used]
    unfed = [name for name in signature if name not in mapping]
    if len(unfed) == 1 and rest:
        mapping[unfed[0]] = rest
    elif unfed:
        raise DslcError(
            f"{path}: no columns for {', '.join(unfed)} (header: {', '.join(header)})",
            hint="name a column after each target and map the rest with --columns NAME=COL,COL",
        )
    index = {c: i for i, c in enumerate(header)}
    for name, cols in mapping.items():
        missing = [c for c in cols if c not in index]
        if missing:
            raise DslcError(f"{path}: --columns {name} names unknown column {missing[0]!r}")
    _check_widths(path, rows, len(header))
    named = {
        name: cols[0]
        for name, cols in mapping.items()
        if _names(rows, index, name, cols, signature)
    }
    out = {}
    for name, cols in mapping.items():
        if name in named:
            values = [row[index[cols[0]]].strip() for row in rows]
            known = (classes or {}).get(name)
            out[name], found = labels.encode(
                path, cols[0], values, list(range(2, len(rows) + 2)), known
            )
            if classes is not None:
                classes[name] = found
            continue
        table = _floats(path, rows, [index[c] for c in cols], cols)
        out[name] = _shaped(table, signature.get(name))
    return out


def _names(rows: list[list[str]], index: dict, name: str, cols: list[str], sig: Signature) -> bool:
    """Whether one column feeding an integer array holds names rather than numbers."""
    if len(cols) != 1 or not sig.get(name, ("float", ()))[0].startswith(("int", "uint")):
        return False
    return any(not _is_number(row[index[cols[0]]]) for row in rows)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        untrusted.check_size(path, "csv")
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r]
    except FileNotFoundError:
        raise DslcError(f"data file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise _corrupt(path, err) from None
    if len(rows) < 2:
        raise DslcError(f"{path} has no data rows", hint="the first row names the columns")
    return [c.strip() for c in rows[0]], rows[1:]


def _check_widths(path: Path, rows: list[list[str]], width: int) -> None:
    for i, row in enumerate(rows, start=2):
        if len(row) != width:
            raise DslcError(f"{path}:{i}: {len(row)} fields, the header has {width} (truncated?)")


def _floats(path: Path, rows: list[list[str]], at: list[int], cols: list[str]) -> np.ndarray:
    """The columns at `at` as numbers; a field that is none is an error naming its row (the
    file's line, the header being line 1) and column."""
    try:
        return np.array([[row[i] for i in at] for row in rows], dtype=np.float64)
    except ValueError:
        pass
    for line, row in enumerate(rows, start=2):
        for i, col in zip(at, cols, strict=True):
            if not _is_number(row[i]):
                raise DslcError(
                    f"{path}:{line}: column '{col}' holds {row[i].strip()!r}, not a number",
                    hint="class names are read as labels only in a single column feeding an "
                    "integer target",
                )
    raise AssertionError("unreachable: numpy refused a row of numbers")


def _shaped(table: np.ndarray, declared: tuple[str, tuple] | None) -> np.ndarray:
    """A single column is a vector when the array is declared [N]; otherwise rows are
    reshaped to the declared per-example shape when its size matches. CSV has no types:
    whole numbers for an integer array are integers (anything else is left for the dtype
    check to refuse)."""
    if declared is None:
        return table
    dtype, shape = declared
    if dtype.startswith("int") and np.all(np.mod(table, 1) == 0):
        table = table.astype(np.int64)
    if len(shape) == 1 and table.shape[1] == 1:
        return table[:, 0]
    return _reshaped(table, shape)


def _reshaped(array: np.ndarray, shape: tuple) -> np.ndarray:
    rest = shape[1:]
    if all(isinstance(d, int) for d in rest) and int(np.prod(rest)) == array[0].size:
        return array.reshape((array.shape[0], *rest))
    return array


def read_idx_files(text: str, signature: Signature) -> dict[str, np.ndarray]:
    paths = _idx_paths(text)
    names = list(signature)
    if len(paths) != len(names):
        raise DslcError(
            f"--data {text}: {len(paths)} IDX files for {len(names)} arrays ({', '.join(names)})",
            hint="one file per input and target, in order: images.idx3-ubyte:labels.idx1-ubyte",
        )
    out = {}
    for name, path in zip(names, paths, strict=True):
        array = read_idx(path)
        if array.dtype == np.uint8 and signature[name][0].startswith(("float", "bfloat")):
            array = array.astype(np.float32) / 255.0  # pixels to [0, 1], as MNIST models expect
        out[name] = _reshaped(array, signature[name][1]) if array.ndim > 1 else array
    return out


def _idx_paths(text: str) -> list[Path]:
    if Path(text).is_dir():
        found = sorted(p for p in Path(text).iterdir() if "idx" in p.name)
        images = [p for p in found if "idx3" in p.name]
        labels = [p for p in found if "idx1" in p.name]
        if len(images) != 1 or len(labels) != 1:
            raise DslcError(
                f"{text} holds {len(images)} idx3 and {len(labels)} idx1 files, not one of each",
                hint="name the two files: --data DIR/images-idx3-ubyte.gz:DIR/labels-idx1-ubyte.gz",
            )
        return [images[0], labels[0]]
    return [Path(p) for p in text.split(":")]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file: 2 zero bytes, a type code, the rank, big-endian u32 dims, the data. A .gz
    file is decompressed as a stream, the header first: no more than the header promises is
    read, so a gzip bomb stops at the data limit."""
    try:
        packed = untrusted.check_size(path, "data")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            return _idx_body(path, cast(IO[bytes], f), packed if path.suffix != ".gz" else None)
    except FileNotFoundError:
        raise DslcError(f"data file {path} does not exist") from None
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise _corrupt(path, err) from None


def _idx_body(path: Path, f: IO[bytes], file_size: int | None) -> np.ndarray:
    """The array after the header; `file_size` is None for a compressed file."""
    head = f.read(4)
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_TYPES:
        raise DslcError(f"{path} is not an IDX file (bad magic number)")
    rank = head[3]
    raw_dims = f.read(4 * rank)
    dims = tuple(int(d) for d in np.frombuffer(raw_dims[: len(raw_dims) // 4 * 4], ">u4"))
    dtype = np.dtype(_IDX_TYPES[head[2]])
    size = math.prod(dims) * dtype.itemsize
    if file_size is None and size > untrusted.limit("data"):
        raise untrusted.too_large(f"{path} (decompressed, as its header declares)", size, "data")
    have = file_size - 4 - len(raw_dims) if file_size is not None else None
    body = f.read(size + 1) if have is None or have == size else b""
    if len(dims) != rank or len(body) != size:
        held = len(body) if have is None else have
        raise DslcError(
            f"{path}: the header promises {size} bytes of data for shape {dims}, "
            f"the file holds {'more' if held > size else held} (truncated or corrupt?)"
        )
    return np.frombuffer(body, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def read_text(path: Path, signature: Signature) -> dict[str, np.ndarray]:
    """Bytes as tokens (0..255), cut into non-overlapping windows of the spec's sequence length
    T: input = tokens[i : i+T], target = tokens[i+1 : i+T+1]."""
    (x, (_, xshape)), (y, _) = _text_pair(path, signature)
    length = xshape[1]
    try:
        untrusted.check_size(path, "text")
        tokens = np.frombuffer(path.read_bytes(), np.uint8).astype(np.int64)
    except FileNotFoundError:
        raise DslcError(f"data file {path} does not exist") from None
    except OSError as err:
        raise _corrupt(path, err) from None
    windows = (tokens.size - 1) // length
    if windows < 1:
        raise DslcError(
            f"{path} holds {tokens.size} bytes, too few for one window of {length} tokens"
        )
    starts = np.arange(windows)[:, None] * length + np.arange(length)[None, :]
    return {x: tokens[starts], y: tokens[starts + 1]}


def _text_pair(path: Path, signature: Signature) -> list:
    items = list(signature.items())
    ok = len(items) == 2 and all(
        dtype == "int64" and len(shape) == 2 and isinstance(shape[1], int)
        for _, (dtype, shape) in items
    )
    if not ok:
        declared = ", ".join(f"{k}: {d}{list(s)}" for k, (d, s) in items)
        raise DslcError(
            f"{path}: a text file trains a model with one i64[N, T] input and one i64[N, T] "
            f"target, T a number; this spec declares {declared}",
            hint="use .npz data for other models",
        )
    return items


def read(
    text: str,
    signature: Signature,
    columns: dict[str, list[str]],
    classes: dict[str, list[str]] | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of the data file (or files) named by `text`, chosen by extension;
    `classes`: see read_csv."""
    path = Path(text)
    if ":" in text or path.is_dir() or "idx" in path.name:
        return read_idx_files(text, signature)
    suffix = path.suffix
    readers = {
        ".npz": lambda: read_npz(path),
        ".csv": lambda: read_csv(path, signature, columns, classes),
        ".txt": lambda: read_text(path, signature),
    }
    if suffix.lower() not in readers:
        raise DslcError(
            f"--data {text}: unknown format '{suffix or path.name}'",
            hint="data is .npz, .csv, .txt (bytes as tokens) or MNIST IDX (a:b or a directory)",
        )
    return readers[suffix.lower()]()
