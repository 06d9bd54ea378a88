"""Limits on the files dslc reads but did not necessarily write: weights, data, tokenizers,
checkpoints. Anyone can hand dslc such a file, so each is checked against a size limit before it
is read, a zip archive's declared sizes and compression ratios are checked before any member is
decompressed, and an .npy header's shape is checked against the bytes that follow it before
numpy allocates the array. Every refusal is a DslcError naming the file (and the member).

The limits (docs/limits.md has the table) are generous for real models and data; each can be
raised for a trusted file with the environment variable `DSLC_MAX_<KIND>_BYTES`, e.g.
DSLC_MAX_WEIGHTS_BYTES=68719476736 for a 64 GiB weights file.

This module imports only numpy and the standard library: the ONNX path runs without torch."""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from dslc.errors import DslcError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# The largest file of each kind dslc reads, in bytes (and for archives, the most their members
# may hold decompressed, all together).
LIMITS = {
    "weights": 16 * GiB,  # a state_dict or .safetensors file: 4 billion float32 values
    "checkpoint": 48 * GiB,  # trainer.pt: the weights and an optimizer's two moments
    "data": 16 * GiB,  # .npz / .npy / MNIST IDX training data or `dslc run` inputs
    "csv": 1 * GiB,  # parsed into Python strings first, which cost many times the bytes
    "text": 1 * GiB,  # .txt training text: tokens are int64, 8 bytes a byte
    "annotations": 1 * GiB,  # COCO-style JSON: train2017's instances file is 448 MB
    "tokenizer": 64 * MiB,  # GPT-2's tokenizer.json is 1.4 MB, the largest common ones 20 MB
    "metrics": 64 * MiB,  # metrics.jsonl: one short line per epoch
    "pickle": 64 * MiB,  # a state_dict's data.pkl: names and layouts, no tensor data
}
MAX_RATIO = 100  # the most a zip member may expand when decompressed ...
RATIO_FLOOR = 64 * MiB  # ... once it holds more than this (small members may compress better)


def limit(kind: str) -> int:
    """The byte limit for files of `kind`, or its DSLC_MAX_<KIND>_BYTES override."""
    name = env_name(kind)
    text = os.environ.get(name)
    if text is None:
        return LIMITS[kind]
    try:
        value = int(text)
    except ValueError:
        raise DslcError(f"{name}={text!r} is not a number of bytes") from None
    if value < 0:
        raise DslcError(f"{name}={text!r} is not a number of bytes")
    return value


def env_name(kind: str) -> str:
    return f"DSLC_MAX_{kind.upper()}_BYTES"


def human(n: int) -> str:
    """Bytes for people: 512 bytes, 1.5 MiB, 29.1 TiB."""
    if n < KiB:
        return f"{n} bytes"
    value, unit = float(n), "bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):  # noqa: B007  (the unit reached is kept)
        value /= 1024
        if value < 1024:
            break
    return f"{value:.3g} {unit}"


def too_large(what: str, have: int, kind: str) -> DslcError:
    return DslcError(
        f"{what} is {human(have)}, over dslc's limit of {human(limit(kind))} for {kind} files",
        hint=f"if the file is trusted and that large, raise the limit: {env_name(kind)}=BYTES",
    )


def check_size(path: str | os.PathLike[str], kind: str) -> int:
    """The size of `path`, refused when over the limit of its kind; OSError (a missing file)
    is left to the caller, which knows how to say it."""
    n = os.stat(path).st_size
    if n > limit(kind):
        raise too_large(str(path), n, kind)
    return n


def check_zip(archive: zipfile.ZipFile, path: str | os.PathLike[str], kind: str) -> int:
    """Refuse an archive whose members would decompress to more than the limit (all together),
    or one member expanding more than MAX_RATIO times (a zip bomb), before reading any of them.
    zipfile stops every member at its declared size, so the declared sizes are what counts.
    Returns the total declared size."""
    total = 0
    for info in archive.infolist():
        where = f"{path}: member {info.filename}"
        if info.file_size > limit(kind):
            raise too_large(where, info.file_size, kind)
        packed = max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * packed:
            raise DslcError(
                f"{where} would expand from {human(info.compress_size)} to "
                f"{human(info.file_size)} (over {MAX_RATIO} times): refused as a zip bomb",
                hint="save it uncompressed (np.savez, torch.save), or compress it less",
            )
        total += info.file_size
    if total > limit(kind):
        raise too_large(f"{path} (its members decompressed)", total, kind)
    return total


def npy_header(fp: IO[bytes], available: int, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an .npy stream declares, refused when they need more bytes than the
    `available` bytes after the header: np.load would allocate the declared shape first."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise DslcError(f"{where}: .npy format version {version} is not read by dslc")
    except (ValueError, EOFError) as err:
        raise DslcError(f"cannot read {where}: not a valid .npy header ({err})") from None
    if dtype.hasobject:
        raise DslcError(
            f"{where} holds a Python object array, which dslc does not load",
            hint="save a numeric array (objects would need pickle, which can run code)",
        )
    need = math.prod(shape) * dtype.itemsize
    available -= fp.tell() if hasattr(fp, "tell") else 0
    if need > available:
        raise DslcError(
            f"{where}: its header declares shape {tuple(shape)} of {dtype} ({human(need)}), "
            f"but only {human(max(available, 0))} follow (truncated or corrupt?)"
        )
    return tuple(shape), dtype


def check_npy(path: str | os.PathLike[str], kind: str = "data", where: str = "") -> None:
    """An .npy file: its size, then its header against that size. `where`: how messages name
    the file (its path by default)."""
    n = check_size(path, kind)
    with open(path, "rb") as f:
        npy_header(f, n, where or str(path))


def check_npz(archive: zipfile.ZipFile, path: str | os.PathLike[str], where: str = "") -> None:
    """An .npz archive: the zip's declared sizes, then each array's header against the size
    of its member, so that loading any member allocates no more than the member holds."""
    check_zip(archive, path, "data")
    for info in archive.infolist():
        if info.filename.endswith(".npy"):
            with archive.open(info) as member:
                npy_header(member, info.file_size, f"{where or path}: member {info.filename}")


def open_npz(path: str | os.PathLike[str], where: str = "") -> np.lib.npyio.NpzFile:
    """np.load of a checked .npz data file (pickles refused); the caller closes it."""
    check_size(path, "data")
    with zipfile.ZipFile(path) as archive:
        check_npz(archive, path, where)
    return np.load(Path(path), allow_pickle=False)


def read_arrays(path: str | os.PathLike[str], where: str = "") -> dict[str, np.ndarray]:
    """Every array of a .npy (under the name "") or .npz file, checked as above; what a user can
    get wrong (a pickled object array, a truncated or corrupt file) is a DslcError naming it."""
    what = where or str(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            check_npy(path, where=what)
            return {"": np.load(path, allow_pickle=False)}
        if not magic.startswith(b"PK"):  # .npz files are zips
            raise DslcError(f"{what} is not a NumPy .npy or .npz file")
        with open_npz(path, what) as z:
            return {k: z[k] for k in z.files}  # reading every member finds a truncated file
    except FileNotFoundError:
        raise DslcError(f"{what} does not exist") from None
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise DslcError(
                f"{what} holds Python objects, not plain arrays; refused (never unpickled)",
                hint="save numeric arrays: np.savez(path, x=x.astype(np.float32), y=y)",
            ) from None
        raise DslcError(f"cannot read {what} (truncated or corrupt?): {err}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as err:
        raise DslcError(f"cannot read {what} (truncated or corrupt?): {err}") from None
