"""Parameter initialization schemes: one table, used by the registry (which scheme a
parameter gets), the PyTorch backend (the nn.init call to emit) and the ONNX backend
(numpy samples, for graphs built without trained weights).

"default" means "what PyTorch's own module does", so a spec without init= produces exactly
the module a PyTorch user would write. For linear and conv that is U(-1/sqrt(fan_in),
1/sqrt(fan_in)) for weight and bias alike (kaiming_uniform with a=sqrt(5))."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dslc.diagnostics import SpecError

# name -> what it means; the keys are the values `init=` and `bias_init=` accept.
SCHEMES: dict[str, str] = {
    "default": "PyTorch's default for the layer",
    "he_uniform": "Kaiming/He uniform, fan_in, gain sqrt(2) (for ReLU)",
    "he_normal": "Kaiming/He normal, fan_in, gain sqrt(2) (for ReLU)",
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


FAN_BASED = ("he_uniform", "he_normal", "xavier_uniform", "xavier_normal")


def from_attr(value: str | float | tuple, default: Init, vector: bool = False) -> Init:
    """The Init for an `init=` attribute value: a scheme name or a number (a constant).
    `vector`: the parameter is 1-D (a bias), which has no fans for He or Xavier."""
    if vector and value in FAN_BASED:
        raise SpecError(
            f"{value} needs a weight's fan-in and fan-out, which a bias does not have",
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


def torch_statement(init: Init, target: str) -> str | None:
    """The nn.init call that gives `target` this init, or None when the module's own
    reset_parameters already does it."""
    match init.kind:
        case "uniform_fan_in" | "torch_ones" | "torch_zeros" | "torch_normal":
            return None
        case "normal_0.02":
            return f"nn.init.normal_({target}, std=0.02)"
        case "he_uniform" | "he_normal":
            fn = "kaiming_uniform_" if init.kind == "he_uniform" else "kaiming_normal_"
            return f'nn.init.{fn}({target}, nonlinearity="relu")'
        case "xavier_uniform" | "xavier_normal":
            return f"nn.init.{init.kind}_({target})"
        case "zeros" | "ones":
            return f"nn.init.{init.kind}_({target})"
        case "constant":
            return f"nn.init.constant_({target}, {init.value!r})"
        case "values":
            assert init.values is not None
            return f"{target}.copy_(torch.tensor({literal(init.values)}))"
    raise ValueError(f"unknown init kind {init.kind}")


# Kinds whose values are drawn independently, element by element: a large parameter of such a
# kind may be drawn in pieces (each with its own generator) on several threads.
ELEMENTWISE = ("uniform_fan_in", *FAN_BASED, "torch_normal", "normal_0.02")


def sample(init: Init, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draw a parameter in float32 from the same distribution PyTorch would use (drawn in
    float32 directly: a ResNet-50's 25M values take a tenth of a second)."""
    match init.kind:
        case kind if kind in ELEMENTWISE:
            out = np.empty(shape, np.float32)
            fill(init, out.reshape(-1), rng, shape)
            return out
        case "zeros" | "torch_zeros":
            return np.zeros(shape, np.float32)
        case "ones" | "torch_ones":
            return np.ones(shape, np.float32)
        case "constant":
            return np.full(shape, init.value, np.float32)
        case "values":
            return np.broadcast_to(np.asarray(init.values, np.float32), shape).copy()
    raise ValueError(f"unknown init kind {init.kind}")


def fill(init: Init, out: np.ndarray, rng: np.random.Generator, shape: tuple[int, ...]) -> None:
    """Draw `out` in place: all of a parameter of shape `shape` (which gives the fans), or a
    piece of it, for an ELEMENTWISE kind. Drawing into `out` spares a copy of 500 MB of GPT-2."""
    fan_in, fan_out = fans(shape) if shape else (1, 1)
    match init.kind:
        case "uniform_fan_in":
            _uniform(rng, out, 1.0 / math.sqrt(init.fan_in or fan_in))
        case "he_uniform":
            _uniform(rng, out, math.sqrt(6.0 / fan_in))
        case "he_normal":
            _normal(rng, out, math.sqrt(2.0 / fan_in))
        case "xavier_uniform":
            _uniform(rng, out, math.sqrt(6.0 / (fan_in + fan_out)))
        case "xavier_normal":
            _normal(rng, out, math.sqrt(2.0 / (fan_in + fan_out)))
        case "torch_normal":  # nn.Embedding's default
            _normal(rng, out, 1.0)
        case "normal_0.02":
            _normal(rng, out, 0.02)
        case _:
            raise ValueError(f"{init.kind} is not drawn element by element")


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
