"""Tensor types: a dtype and a shape whose dims are numbers or symbols.

A symbolic dim is a `Sym`: a name (`N`, `T`) or an expression over names that shape rules
build (`(H - 4)/2 + 1`). Sums of names and integers stay linear and simplify
(`(T + 2) - 2` is `T`); anything else is kept as opaque text, compared by that text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# dtype name in .dl -> (numpy dtype, torch dtype name, ONNX TensorProto name)
DTYPES: dict[str, tuple[str, str, str]] = {
    "f16": ("float16", "float16", "FLOAT16"),
    "bf16": ("float32", "bfloat16", "BFLOAT16"),
    "f32": ("float32", "float32", "FLOAT"),
    "f64": ("float64", "float64", "DOUBLE"),
    "i32": ("int32", "int32", "INT32"),
    "i64": ("int64", "int64", "INT64"),
    "bool": ("bool", "bool", "BOOL"),
}
FLOAT_DTYPES = ("f16", "bf16", "f32", "f64")
INT_DTYPES = ("i32", "i64")


@dataclass(frozen=True)
class Sym:
    """A symbolic dim: sum of coeff * name terms plus a constant, or opaque text."""

    terms: tuple[tuple[str, int], ...] = ()
    const: int = 0
    text: str | None = None  # set for opaque (non-linear) expressions

    @staticmethod
    def name(name: str) -> Sym:
        return Sym(((name, 1),))

    def __str__(self) -> str:
        if self.text is not None:
            return self.text
        parts = []
        for name, coeff in self.terms:
            term = name if abs(coeff) == 1 else f"{abs(coeff)}*{name}"
            parts.append(("- " if coeff < 0 else "+ ") + term)
        if self.const:
            parts.append(("- " if self.const < 0 else "+ ") + str(abs(self.const)))
        text = " ".join(parts)
        return text[2:] if text.startswith("+ ") else "-" + text[2:]

    @property
    def is_name(self) -> bool:
        return (
            self.text is None and self.const == 0 and len(self.terms) == 1 and self.terms[0][1] == 1
        )


Dim = int | Sym


def _linear(d: Dim) -> Sym | None:
    if isinstance(d, int):
        return Sym((), d)
    return d if d.text is None else None


def _normal(terms: dict[str, int], const: int) -> Dim:
    kept = tuple(sorted((n, c) for n, c in terms.items() if c))
    return const if not kept else Sym(kept, const)


def _wrap(d: Dim) -> str:
    s = str(d)
    return s if isinstance(d, int) or (isinstance(d, Sym) and d.is_name) else f"({s})"


def dim_add(a: Dim, b: Dim, sign: int = 1) -> Dim:
    la, lb = _linear(a), _linear(b)
    if la is None or lb is None:
        return Sym(text=f"{_wrap(a)} {'+' if sign > 0 else '-'} {_wrap(b)}")
    terms = dict(la.terms)
    for n, c in lb.terms:
        terms[n] = terms.get(n, 0) + sign * c
    return _normal(terms, la.const + sign * lb.const)


def dim_mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if isinstance(a, int) or isinstance(b, int):
        k, sym = (a, b) if isinstance(a, int) else (b, a)
        assert isinstance(k, int) and isinstance(sym, Sym)
        if sym.text is None:
            return _normal({n: c * k for n, c in sym.terms}, sym.const * k)
    return Sym.name(f"{_wrap(a)}*{_wrap(b)}")


def dim_floordiv(a: Dim, b: int) -> Dim:
    """floor(a / b). Exact on linear forms whose coefficients b divides; otherwise the floor is a
    new atom, with the constant's multiple of b taken out: floor((T - 2)/2) = floor(T/2) - 1."""
    if isinstance(a, int):
        return a // b
    if b == 1:
        return a
    if a.text is None and all(c % b == 0 for _, c in a.terms) and a.const % b == 0:
        return _normal({n: c // b for n, c in a.terms}, a.const // b)
    q, r = divmod(a.const, b) if a.text is None else (0, 0)
    inner = dim_add(a, -q * b)
    return dim_add(Sym.name(f"floor({_wrap(inner)}/{b})"), q)


def dim_prod(dims: Sequence[Dim]) -> Dim:
    out: Dim = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"

    def shape_str(self) -> str:
        return "(" + ", ".join(str(d) for d in self.shape) + ")"

    def with_shape(self, shape: tuple[Dim, ...] | list[Dim]) -> TensorType:
        return TensorType(self.dtype, tuple(shape))


def numpy_dtype(dtype: str) -> np.dtype:
    return np.dtype(DTYPES[dtype][0])


DATA_MARK = "?"  # the name of a dim that the data sets, until its node is named


def data_dim(base: str) -> Sym:
    """A dim whose size the data sets (the boxes NMS keeps): a shape rule returns
    `data_dim("K")`, and the elaborator names it after the node (`K_nms1`, `name_data_dims`),
    so that two such counts never compare equal. ONNX writes it as a dim_param."""
    return Sym.name(DATA_MARK + base)


def name_data_dims(t: TensorType, node: str) -> TensorType:
    """`t` with each data-set dim of a shape rule named after its node."""

    def named(d: Dim) -> Dim:
        if isinstance(d, int) or DATA_MARK not in str(d):
            return d
        if d.text is not None:
            return Sym(text=re.sub(r"\?(\w+)", rf"\1_{node}", d.text))
        terms = tuple((f"{n[1:]}_{node}" if n.startswith(DATA_MARK) else n, c) for n, c in d.terms)
        return Sym(terms, d.const)

    return t.with_shape(tuple(named(d) for d in t.shape))
