"""The vocabulary an op's PyTorch emission is written in: a module constructor as a function name
and arguments whose values say where they come from.

An op describes `nn.Conv2d(64, 256, kernel_size=1, bias=False)` as a `Ctor` whose arguments carry
their concrete values and their source: an attribute of the op (`out_channels`, whose call-site
expression may be `width * 4`) or a dim of an input (the channels, 64 here). The PyTorch backend
prints each argument either as its value or, in the class of a block that is instantiated with
different values, as the expression that gives the right value in every instance
(`nn.Conv2d(in_channels, width * 4, kernel_size=1, bias=False)`). A keyword argument equal to
its default in every instance is left out, as a person would write it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class Arg:
    value: Any
    attr: str | None = None  # the op attribute the value comes from
    dim: tuple[int, int] | None = None  # or (input index, dim index) of the node's inputs
    default: Any = NO_DEFAULT  # a keyword argument equal to this is left out
    item: int | None = None  # the value is this element of the (list) attribute `attr`


@dataclass(frozen=True)
class Ctor:
    """`func(*args, **kwargs)`: an nn.Module constructor (or a generated helper class's)."""

    func: str
    args: tuple[Arg, ...] = ()
    kwargs: tuple[tuple[str, Arg], ...] = ()


TUPLE = ""  # the func of a Ctor that stands for a tuple of its arguments: (width, 1, 1)


class Source(str):
    """Python source standing for a value: it prints as itself (repr too)."""

    def __repr__(self) -> str:
        return str(self)


def ctor(func: str, *args: Arg, **kwargs: Arg) -> Ctor:
    return Ctor(func, args, tuple(kwargs.items()))


def attr(node: Any, name: str, value: Any = NO_DEFAULT, default: Any = NO_DEFAULT) -> Arg:
    """Attribute `name` of the node (or `value`, a form of it such as a compacted kernel)."""
    return Arg(node.attrs[name] if value is NO_DEFAULT else value, attr=name, default=default)


def dim(node: Any, index: int, d: int, attr: str | None = None) -> Arg:
    """Dim `d` of the node's input `index` (negative counts from the end); where the spec also
    states it as attribute `attr` (conv2d's in_channels=), the spec's expression comes first."""
    shape = node.inputs[index].type.shape
    return Arg(shape[d], attr=attr, dim=(index, d % len(shape)))


def lit(value: Any, default: Any = NO_DEFAULT) -> Arg:
    return Arg(value, default=default)


def compact(values: tuple[int, ...]) -> int | tuple[int, ...]:
    """3 for (3, 3), (3, 5) otherwise: how a PyTorch user writes kernel sizes."""
    return values[0] if len(set(values)) == 1 else tuple(values)


def render(made: Ctor, func: str | None = None, *leading: str) -> str:
    """A constructor (or the function of the same arguments, `func`, after the `leading`
    tensors) as Python source with its concrete values; keywords at their default left out."""
    parts = [*leading, *(py(a.value) for a in made.args)]
    parts += [
        f"{k}={py(a.value)}"
        for k, a in made.kwargs
        if a.default is NO_DEFAULT or norm(a.value) != norm(a.default)
    ]
    return f"{func or made.func}({', '.join(parts)})"


def tensor_method(arg: str, method: str, axes: tuple[int, ...], keepdim: bool = False) -> str:
    """A reduction as torch.Tensor's method: `x.mean(dim=1)`, `x.amax(dim=(2, 3))`."""
    dim = axes[0] if len(axes) == 1 else tuple(axes)
    return f"{arg}.{method}(dim={dim}{', keepdim=True' if keepdim else ''})"


def norm(v: Any) -> Any:
    """Lists as tuples, so that a value given as [3, 3] equals the resolved (3, 3)."""
    return tuple(norm(x) for x in v) if isinstance(v, list | tuple) else v


def py(value: Any) -> str:
    """A concrete value as Python source."""
    if isinstance(value, Source):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "(" + ", ".join(map(py, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(map(py, value)) + "]"
    return repr(value)
