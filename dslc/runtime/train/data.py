"""Training data: read a file (formats.py), check every array against the spec's declared inputs
and targets before any training, and hold the result as tensors.

Dtype rules (`convert`): an array of the declared dtype is taken as is; float arrays into a
float input of another width, and integer arrays into an integer input of another width (when
every value fits), are converted; integer arrays into a float input are converted to that
float (no scaling; IDX images are the one exception, scaled to [0, 1] by the reader).
Refused: floats into an integer input (labels must be integers), bools into or from anything
but bool. Symbolic dims (N, T, ...) bind to one size across all arrays."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from dslc.errors import DslcError
from dslc.runtime.train import formats, objects
from dslc.runtime.train.contract import Contract, Signature

_NUMPY = {"bfloat16": "float32"}  # numpy has no bfloat16: hold f32, torch converts


def load(
    text: str,
    signature: Signature,
    model: str,
    columns: dict[str, list[str]] | None = None,
    classes: dict[str, list[str]] | None = None,
    per_object: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """The checked arrays of data file `text`, keyed and ordered as `signature`; `classes`:
    class names of label columns (formats.read_csv); `per_object`: objects.Layout.names."""
    arrays = formats.read(text, signature, columns or {}, classes)
    return check(arrays, signature, model, text, per_object)


def load_for(
    c: Contract,
    text: str,
    columns: dict[str, list[str]] | None = None,
    classes: dict[str, list[str]] | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of one data file checked against the spec, class labels and objects
    included (before any split, so that a bad label's position is its position in the file)."""
    lay = objects.layout(c)
    arrays = load(text, c.arrays, c.name, columns, classes, lay.names if lay else ())
    check_classes(arrays, c.classes, c.name, text, c.ignore)
    if lay is not None:
        objects.check(arrays, lay, c.name, text)
    return arrays


def check(
    arrays: dict[str, np.ndarray],
    signature: Signature,
    model: str,
    source: str,
    per_object: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    extra = [k for k in arrays if k not in signature]
    if extra:
        raise DslcError(
            f"{source}: array '{extra[0]}' is not an input or target of model {model}",
            hint=f"the arrays are {', '.join(signature)}",
        )
    bound: dict[str, tuple[int, str]] = {}  # symbol -> (size, the array that fixed it)
    out = {}
    for name, (dtype, shape) in signature.items():
        if name not in arrays:
            raise DslcError(
                f"{source} has no array '{name}' "
                f"(model {model} declares {_declared(name, dtype, shape)})",
                hint=f"it holds {', '.join(arrays) or 'nothing'}; "
                f"the arrays are {', '.join(signature)}",
            )
        array = arrays[name]
        _check_shape(array, name, dtype, shape, bound, source, name not in per_object)
        out[name] = convert(array, name, dtype, source)
    return out


def check_classes(
    arrays: dict[str, np.ndarray],
    classes: dict[str, tuple[str, int]],
    model: str,
    source: str,
    ignore: dict[str, int] | None = None,
) -> None:
    """Class labels within the prediction's classes, before training: F.cross_entropy would
    fail mid-epoch on the first batch holding one past the end (an IndexError, or a CUDA
    assert), and silently skip -100. `classes`: Contract.classes."""
    for name, (output, count) in classes.items():
        labels = arrays.get(name)
        if labels is None or labels.size == 0 or labels.dtype.kind not in "iu":
            continue
        skip = (ignore or {}).get(name)  # the spec's ignore_index (padding) counts for nothing
        if skip is not None:
            labels = labels[labels != skip]
            if labels.size == 0:
                continue
        low, high = labels.min(), labels.max()
        if low >= 0 and high < count:
            continue
        value = high if high >= count else low
        where = np.unravel_index(int(np.argmax(labels == value)), labels.shape)
        at = where[0] if labels.ndim == 1 else tuple(int(i) for i in where)
        raise DslcError(
            f"{source}: array '{name}' holds class {value} at index {at} (its labels span "
            f"{low} to {high}), but model {model}'s output '{output}' has {count} classes, "
            f"0 to {count - 1}",
            hint="give the model as many classes as the data has (a spec parameter such as "
            "--param classes=N), or relabel the data",
        )


def _declared(name: str, dtype: str, shape: tuple) -> str:
    return f"{name}: {dtype}[{', '.join(str(d) for d in shape)}]"


def _check_shape(
    array: np.ndarray,
    name: str,
    dtype: str,
    shape: tuple,
    bound: dict[str, tuple[int, str]],
    source: str,
    examples: bool = True,
) -> None:
    """`examples`: dim 0 counts examples (not objects, of which an image may have none)."""

    def fail(why: str) -> DslcError:
        return DslcError(
            f"{source}: array '{name}' has shape {tuple(array.shape)}, but the spec declares "
            f"{_declared(name, dtype, shape)}",
            hint=why,
        )

    if array.ndim != len(shape):
        raise fail(f"it needs {len(shape)} dimensions, the array has {array.ndim}")
    for i, (size, dim) in enumerate(zip(array.shape, shape, strict=True)):
        if isinstance(dim, int) and size != dim:
            raise fail(f"dimension {i} must be {dim}")
        if isinstance(dim, str) and dim.isidentifier():
            first = bound.setdefault(dim, (size, name))
            if first[0] != size:
                raise fail(f"{dim} is {first[0]} in array '{first[1]}' but {size} here")
    if examples and array.ndim and array.shape[0] == 0:
        raise fail("the data set is empty")


def convert(array: np.ndarray, name: str, dtype: str, source: str) -> np.ndarray:
    want = np.dtype(_NUMPY.get(dtype, dtype))
    have = array.dtype
    if have == want:
        return array
    refused = (
        (want.kind in "iu" and have.kind not in "iu")
        or (want.kind == "b") != (have.kind == "b")
        or have.kind not in "iufb"
    )
    if want.kind in "iu" and not refused and array.size:
        info = np.iinfo(want)
        refused = bool(array.min() < info.min or array.max() > info.max)
    if refused:
        raise DslcError(
            f"{source}: array '{name}' has dtype {have}, but the spec declares {dtype}",
            hint=_dtype_hint(want),
        )
    return array.astype(want)


def _dtype_hint(want: np.dtype) -> str:
    if want.kind in "iu":
        return f"integer data (class labels, token ids) that fits {want}; floats are refused"
    if want.kind == "b":
        return "bool data"
    return "float or integer data (integers are converted, not scaled)"


@dataclass
class Dataset:
    """Tensors of one length, keyed by array name; per-object targets (`objects`) hold the
    objects of all examples in example order, example i's rows starts[i]:starts[i + 1]."""

    tensors: dict
    source: str
    classes: list[str] | None = None  # class names, where the data names its classes
    objects: objects.Layout | None = None
    starts: np.ndarray | None = None

    def __len__(self) -> int:
        held = self.objects.names if self.objects else ()
        return int(next(t for k, t in self.tensors.items() if k not in held).shape[0])

    def take(self, index) -> dict:
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        if self.objects is not None and self.starts is not None:
            return objects.select(self.tensors, self.starts, index, self.objects)
        return {k: t[index] for k, t in self.tensors.items()}

    def batches(self, chunks: list, epoch: int) -> Iterator[dict]:
        """The batches of example indices `chunks` (images.ImageSet decodes them ahead)."""
        return (self.take(chunk) for chunk in chunks)


def to_dataset(
    arrays: dict[str, np.ndarray],
    signature: Signature,
    source: str,
    lay: objects.Layout | None = None,
) -> Dataset:
    import torch

    starts = None
    if lay is not None:
        arrays, starts = objects.sort(arrays, lay)
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(a)).to(getattr(torch, signature[k][0]))
        for k, a in arrays.items()
    }
    return Dataset(tensors, source, objects=lay, starts=starts)


def split(
    arrays: dict[str, np.ndarray],
    fraction: float,
    seed: int,
    source: str,
    lay: objects.Layout | None = None,
) -> tuple[dict, dict]:
    """A fixed random `fraction` of the examples held out for validation; with per-object
    targets (`lay`), each side keeps its images' objects, renumbered."""
    n = objects.count(arrays, lay) if lay else len(next(iter(arrays.values())))
    held = int(round(n * fraction))
    if held < 1 or held >= n:
        raise DslcError(
            f"--val-split {fraction} of {n} examples in {source} leaves "
            f"{held} for validation and {n - held} for training",
            hint="give a fraction that keeps both sides non-empty, or --val FILE",
        )
    order = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(order[:held]), np.sort(order[held:])
    if lay is not None:
        arrays, starts = objects.sort(arrays, lay)
        pick = objects.select
        return pick(arrays, starts, train, lay), pick(arrays, starts, val, lay)
    return {k: a[train] for k, a in arrays.items()}, {k: a[val] for k, a in arrays.items()}
