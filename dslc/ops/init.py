"""Parameter initialization schemes: one table, used by the registry (which scheme a
parameter gets), the PyTorch backend (the nn.init call to emit) and the ONNX backend
(numpy samples, for graphs built without trained weights).

"default" means "what PyTorch's own module does", so a spec without init= produces exactly
the module a PyTorch user would write. For linear and conv that is U(-1/sqrt(fan_in),
1/sqrt(fan_in)) for weight and bias alike (kaiming_uniform with a=sqrt(5))."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dslc.diagnostics import SpecError

# name -> what it means; the keys are the values `init=` and `bias_init=` accept.
SCHEMES: dict[str, str] = {
    "default": "PyTorch's default for the layer",
    "he_uniform": "Kaiming/He uniform, fan_in, gain sqrt(2) (for ReLU)",
    "he_normal": "Kaiming/He normal, fan_in, gain sqrt(2) (for ReLU)",
    "he_uniform_a1": "Kaiming/He uniform with a = 1, fan_in, gain 1 (torchvision's FPN)",
    "xavier_uniform": "Xavier/Glorot uniform, gain 1",
    "xavier_normal": "Xavier/Glorot normal, gain 1",
    "normal_0.02": "normal with mean 0 and std 0.02 (GPT-2's and BERT's weights)",
    "zeros": "all zeros",
    "ones": "all ones",
}


@dataclass(frozen=True)
class Init:
    """How one parameter starts. `kind` is a SCHEMES key, "uniform_fan_in" (PyTorch's linear and
    conv default, with fan_in taken from the weight), "torch_normal" (nn.Embedding's N(0, 1)),
    "constant" with `value`, or "values": a tensor written in the spec (a filter kernel),
    broadcast to the parameter's shape."""

    kind: str
    value: float = 0.0
    fan_in: int | None = None
    values: tuple | None = None  # kind "values": a nested tuple, broadcast to the shape

    def __str__(self) -> str:
        """As the IR text shows it: he_normal, constant(0.5), values[[...]]."""
        if self.kind in ("constant", "torch_full"):
            return f"{self.kind}({self.value})"
        if self.kind == "values":
            return "values" + _text(self.values)
        return self.kind


def _text(v: tuple | float | None) -> str:
    """Numbers as written in the spec, lists in brackets."""
    if isinstance(v, tuple):
        return "[" + ", ".join(map(_text, v)) + "]"
    return repr(v)


FAN_BASED = ("he_uniform", "he_uniform_a1", "he_normal", "xavier_uniform", "xavier_normal")


def from_attr(value: str | float | tuple, default: Init, vector: bool = False) -> Init:
    """The Init for an `init=` attribute value: a scheme name or a number (a constant).
    `vector`: the parameter is 1-D (a bias), which has no fans for He or Xavier."""
    if vector and value in FAN_BASED:
        raise SpecError(
            f"{value} needs a weight's fan-in and fan-out, which a 1-D parameter (a bias) "
            "does not have",
            hint='biases take "default", "zeros", "ones" or a number',
        )
    # Attr.coerce (kind "init") has already refused bools and unknown scheme names.
    if isinstance(value, tuple):
        return Init("values", values=value)
    if isinstance(value, int | float):
        return Init("constant", float(value))
    return default if value == "default" else Init(value)


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """fan_in and fan_out as torch.nn.init computes them."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    fan_in = shape[1] * receptive if len(shape) > 1 else shape[0]
    return fan_in, shape[0] * receptive


# Each kind of Init once: its PyTorch statement (None: the module's own reset_parameters
# already does it; `t` is the target), and its NumPy draw, element by element into `out` from
# the fans of `shape` (a parameter may be drawn in pieces on several threads), or whole.
Draw = Callable[[Init, np.ndarray, np.random.Generator, tuple[int, int]], None]


@dataclass(frozen=True)
class Kind:
    torch: Callable[[Init, str], str | None]
    draw: Draw | None = None  # elementwise kinds
    whole: Callable[[Init, tuple[int, ...]], np.ndarray] | None = None


def _module_default(init: Init, t: str) -> None:
    return None


def _std(bound: Callable[[Init, tuple[int, int]], float], normal: bool) -> Draw:
    def draw(init: Init, out: np.ndarray, rng: np.random.Generator, fans: tuple[int, int]) -> None:
        (_normal if normal else _uniform)(rng, out, bound(init, fans))

    return draw


KINDS: dict[str, Kind] = {
    "uniform_fan_in": Kind(
        _module_default, _std(lambda i, f: 1.0 / math.sqrt(i.fan_in or f[0]), normal=False)
    ),
    "torch_normal": Kind(_module_default, _std(lambda i, f: 1.0, normal=True)),
    # N(0, 0.01) that a generated helper module draws itself (torchvision's RPNHead)
    "torch_normal_0.01": Kind(_module_default, _std(lambda i, f: 0.01, normal=True)),
    "torch_ones": Kind(_module_default, whole=lambda i, s: np.ones(s, np.float32)),
    "torch_zeros": Kind(_module_default, whole=lambda i, s: np.zeros(s, np.float32)),
    "torch_prelu": Kind(_module_default, whole=lambda i, s: np.full(s, 0.25, np.float32)),
    "torch_full": Kind(_module_default, whole=lambda i, s: np.full(s, i.value, np.float32)),
    "he_uniform": Kind(
        lambda i, t: f'nn.init.kaiming_uniform_({t}, nonlinearity="relu")',
        _std(lambda i, f: math.sqrt(6.0 / f[0]), normal=False),
    ),
    "he_uniform_a1": Kind(
        lambda i, t: f"nn.init.kaiming_uniform_({t}, a=1)",
        _std(lambda i, f: math.sqrt(3.0 / f[0]), normal=False),
    ),
    "he_normal": Kind(
        lambda i, t: f'nn.init.kaiming_normal_({t}, nonlinearity="relu")',
        _std(lambda i, f: math.sqrt(2.0 / f[0]), normal=True),
    ),
    "xavier_uniform": Kind(
        lambda i, t: f"nn.init.xavier_uniform_({t})",
        _std(lambda i, f: math.sqrt(6.0 / (f[0] + f[1])), normal=False),
    ),
    "xavier_normal": Kind(
        lambda i, t: f"nn.init.xavier_normal_({t})",
        _std(lambda i, f: math.sqrt(2.0 / (f[0] + f[1])), normal=True),
    ),
    "normal_0.02": Kind(
        lambda i, t: f"nn.init.normal_({t}, std=0.02)", _std(lambda i, f: 0.02, normal=True)
    ),
    "zeros": Kind(lambda i, t: f"nn.init.zeros_({t})", whole=lambda i, s: np.zeros(s, np.float32)),
    "ones": Kind(lambda i, t: f"nn.init.ones_({t})", whole=lambda i, s: np.ones(s, np.float32)),
    "constant": Kind(
        lambda i, t: f"nn.init.constant_({t}, {i.value!r})",
        whole=lambda i, s: np.full(s, i.value, np.float32),
    ),
    "values": Kind(
        lambda i, t: f"{t}.copy_(torch.tensor({literal(i.values or ())}))",
        whole=lambda i, s: np.broadcast_to(np.asarray(i.values, np.float32), s).copy(),
    ),
}
# Kinds whose values are drawn independently, element by element.
ELEMENTWISE = tuple(k for k, kind in KINDS.items() if kind.draw is not None)


def torch_statement(init: Init, target: str) -> str | None:
    """The statement that gives `target` this init, or None where the module's own
    reset_parameters already does it."""
    return KINDS[init.kind].torch(init, target)


def sample(init: Init, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draw a parameter in float32 from the same distribution PyTorch would use (drawn in
    float32 directly: a ResNet-50's 25M values take a tenth of a second)."""
    kind = KINDS[init.kind]
    if kind.whole is not None:
        return kind.whole(init, shape)
    out = np.empty(shape, np.float32)
    fill(init, out.reshape(-1), rng, shape)
    return out


def fill(init: Init, out: np.ndarray, rng: np.random.Generator, shape: tuple[int, ...]) -> None:
    """Draw `out` in place: all of a parameter of shape `shape` (which gives the fans), or a
    piece of it, for an ELEMENTWISE kind. Drawing into `out` spares a copy of 500 MB of GPT-2."""
    draw = KINDS[init.kind].draw
    if draw is None:
        raise ValueError(f"{init.kind} is not drawn element by element")
    draw(init, out, rng, fans(shape) if shape else (1, 1))


def _uniform(rng: np.random.Generator, out: np.ndarray, bound: float) -> None:
    """U(-bound, bound)."""
    rng.random(out=out, dtype=np.float32)
    out *= np.float32(2 * bound)
    out -= np.float32(bound)


def _normal(rng: np.random.Generator, out: np.ndarray, std: float) -> None:
    rng.standard_normal(out=out, dtype=np.float32)
    out *= np.float32(std)


def literal(values: tuple | float) -> str:
    """A nested tuple of numbers as a Python list literal of floats: [[-1.0, 0.0, 1.0], ...]."""
    if isinstance(values, tuple):
        return "[" + ", ".join(literal(v) for v in values) + "]"
    return repr(float(values))


def values_shape(values: tuple | float) -> tuple[int, ...]:
    """The shape of a nested tuple; ValueError when its rows differ in length."""
    if not isinstance(values, tuple):
        return ()
    inner = {values_shape(v) for v in values}
    if len(inner) != 1:
        raise ValueError("rows of different lengths")
    return (len(values), *inner.pop())
