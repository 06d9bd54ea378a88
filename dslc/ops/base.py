"""The op registry's building blocks. Every layer, loss and optimizer is one OpDef subclass,
registered by name; it declares its attributes and implements its shape rule, parameters,
PyTorch emission and ONNX emission. Nothing about an op lives anywhere else."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from dslc.diagnostics import SpecError
from dslc.ir.limits import FLOAT32_MAX, MAX_ATTR_INT, check_list, number_text
from dslc.ir.types import Dim, Sym, TensorType, dim_mul, dim_prod
from dslc.ops.init import SCHEMES

if TYPE_CHECKING:
    from dslc.backends.onnx.builder import OnnxBuilder
    from dslc.ir.causal import Flow
    from dslc.ir.graph import Node, ParamSpec
    from dslc.ir.positions import Axes
    from dslc.ops.pycode import Ctor

REQUIRED: Any = object()
FLOAT_KINDS = ("float", "floats", "scales", "init")  # attribute kinds whose numbers become float32


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# Attribute kinds: what a value must be, in words (for errors) and as a test.
KINDS: dict[str, tuple[str, Any]] = {
    "int": ("an integer", _is_int),
    "float": ("a number", _is_num),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "ints": ("an integer or a list of integers", lambda v: _is_int(v) or _int_list(v)),
    "floats": ("a list of numbers", lambda v: isinstance(v, list) and all(map(_is_num, v))),
    "scales": (
        "a number, or a list of numbers",
        lambda v: _is_num(v) or isinstance(v, list) and len(v) > 0 and all(map(_is_num, v)),
    ),
    "padding": (
        'an integer, a list of integers, "same" or "valid"',
        lambda v: _is_int(v) or _int_list(v) or v in ("same", "valid"),
    ),
    "init": (
        "an initializer name, a number, or a (nested) list of numbers",
        lambda v: isinstance(v, str) or _is_num(v) or _nested_numbers(v),
    ),
    "tensor": ("a tensor", lambda v: _is_value(v)),
    "sizes": (
        "an integer, or a list of sizes (integers, one -1 or one symbolic size such as T - 1)",
        lambda v: (
            _is_int(v) or isinstance(v, list) and all(_is_int(d) or isinstance(d, Sym) for d in v)
        ),
    ),
    "shape": (
        "a list of dims (integers, -1, or symbolic dims such as N)",
        lambda v: isinstance(v, list) and all(_is_int(d) or isinstance(d, Sym) for d in v),
    ),
}


def _is_value(v: Any) -> bool:
    from dslc.ir.graph import Value

    return isinstance(v, Value)


def _nested_numbers(v: Any) -> bool:
    if isinstance(v, list):
        return len(v) > 0 and all(map(_nested_numbers, v))
    return _is_num(v)


def _flat(v: Any) -> list[Any]:
    return [x for item in v for x in _flat(item)] if isinstance(v, list) else [v]


def _nested_tuple(v: Any) -> Any:
    return tuple(_nested_tuple(x) for x in v) if isinstance(v, list) else v


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(map(_is_int, v))


@dataclass(frozen=True)
class Attr:
    name: str
    kind: str
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple[Any, ...] = ()
    minimum: float | None = None  # values must be >= minimum
    maximum: float | None = None  # values must be <= maximum
    positive: bool = False  # values must be > 0

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def coerce(self, op: str | None, value: Any) -> Any:
        """Check a value given for this attribute; `op` prefixes the messages."""
        what, test = KINDS[self.kind]
        where = f"{op}: {self.name}" if op else self.name
        if isinstance(value, list):
            check_list(value)
        self._check_range(where, value)
        if self.kind == "float" and _is_int(value):
            value = float(value)
        if not test(value):
            raise SpecError(f"{where} must be {what}, got {describe(value)}")
        if self.choices and value not in self.choices:
            raise SpecError(
                f"{where} must be one of {', '.join(map(repr, self.choices))}, got {value!r}"
            )
        if self.kind == "init" and isinstance(value, str) and value not in SCHEMES:
            raise SpecError(
                f"{where}: unknown initializer {value!r}",
                hint=f"one of {', '.join(SCHEMES)}, or a number",
            )
        for v in value if isinstance(value, list) else [value]:
            if self.positive and _is_num(v) and v <= 0:
                raise SpecError(f"{where} must be positive, got {v}")
            if self.minimum is not None and _is_num(v) and v < self.minimum:
                raise SpecError(f"{where} must be at least {self.minimum}, got {v}")
            if self.maximum is not None and _is_num(v) and v > self.maximum:
                raise SpecError(f"{where} must be at most {self.maximum}, got {v}")
        if self.kind == "init" and isinstance(value, list):
            return _nested_tuple(value)
        return tuple(value) if isinstance(value, list) else value

    def _check_range(self, where: str, value: Any) -> None:
        """Numbers that become float32 (weights, scalars, rates) within float32's range, ints
        among them too (`init=10**39` is a float32 infinity); integer attributes within
        dslc's limit (an int64 stride is an overflow in ONNX). Before any conversion, so that
        an int too large for a float is this error, not an OverflowError."""
        floats = self.kind in FLOAT_KINDS
        for v in _flat(value):
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if isinstance(v, float) or floats:
                if (isinstance(v, float) and not math.isfinite(v)) or abs(v) > FLOAT32_MAX:
                    raise SpecError(
                        f"{where} must be a finite number within float32's range, "
                        f"got {number_text(v)}"
                    )
            elif abs(v) > MAX_ATTR_INT:
                raise SpecError(
                    f"{where} must be within dslc's limit of ±{MAX_ATTR_INT:,} for an integer "
                    f"attribute, got {number_text(v)}"
                )


def describe(value: Any) -> str:
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "a list"
    if _is_num(value):
        huge = _is_int(value) and abs(value) > 10**30
        return number_text(value) if huge else f"the number {value}"
    if isinstance(value, tuple):
        return f"{len(value)} tensors (the outputs of a block)"
    if isinstance(value, Sym):
        return f"the symbolic dim {value}"
    return getattr(value, "describe", lambda: type(value).__name__)()


class HasAttrs(Protocol):
    """What `OpDef.torch_call` is given: a graph `Node`, or a training `LossTerm`."""

    @property
    def attrs(self) -> dict[str, Any]: ...


@dataclass
class OpDef:
    """Base class of every op. Subclasses set the ClassVars and override the methods they need."""

    name: ClassVar[str]
    family: ClassVar[str]
    doc: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ("x",)  # tensor inputs; ("*xs",) takes a list
    attrs: ClassVar[tuple[Attr, ...]] = ()
    prefix: ClassVar[str] = ""  # node names are prefix + counter; defaults to the op name
    example: ClassVar[str] = ""  # a line of .dl for the language reference
    # The axis of `weight` that indexes output channels, for ops that can absorb a following
    # per-channel affine map (inference batch norm) into their weight and bias; None if not.
    affine_axis: ClassVar[int | None] = None
    channel_dim: ClassVar[int] = 1  # the output dim that holds those channels
    # Losses: with a class-index target the prediction's argmax is a class (accuracy is a
    # metric), and which arguments must be model outputs.
    classifies: ClassVar[bool] = False
    # Losses: the prediction estimates the target's values (mse, l1, ...), so the error's mean
    # absolute value and root mean square are metrics (dslc train and dslc eval report them).
    regresses: ClassVar[bool] = False
    outputs_only: ClassVar[tuple[int, ...]] = ()
    # A fixed per-channel affine map in inference (batch norm): `inference_affine` gives its
    # scale and shift, and ir/fold.py folds it into an affine_axis layer before it.
    affine_in_inference: ClassVar[bool] = False
    # Weight tying: attribute name -> the parameter it shares. `linear(V, tie=emb)` takes the
    # `weight` of the layer that made tensor `emb` instead of holding its own (elaborate.py
    # checks the shapes agree; the attribute then holds the owner's state_dict key).
    ties: ClassVar[dict[str, str]] = {}
    # An op with several outputs whose first is its result (a recurrent layer's sequence, then
    # its final states): the call stands for that first output wherever one tensor is wanted
    # (`x -> lstm(64) -> linear(2)`), and `seq, h = x -> gru(64)` names the outputs from the
    # first on, as many as it lists. It cannot stand in an nn.Sequential, which passes one.
    leading_output: ClassVar[bool] = False
    # Steps along dim 1 (time) of its input in order, so that what it gives at one sequence
    # length says little of another: backend parity runs it at several lengths (parity.py).
    steps_in_time: ClassVar[bool] = False
    # Parameters that ONNX stores transposed, (in, out), as MatMul's B operand (linear and
    # attention projections): no Transpose of a weight at run time, which is also the layout
    # onnxruntime's quantizers look for. OnnxBuilder.param stores them so (builder.py).
    transposed_params: ClassVar[tuple[str, ...]] = ()
    # The tensor input that holds regions of interest, f32[K, 5] rows (image index, x1, y1,
    # x2, y2), by index (-1: the last); None if none. Random inputs for parity (parity.py)
    # draw real RoIs there, inside the image `roi_image` gives, since random numbers are not.
    rois_input: ClassVar[int | None] = None
    # An op whose outputs are detections, one row each: what each output is (boxes, scores,
    # labels, images), so that the ONNX model says which of its outputs hold them
    # (metadata dslc.detections) and `dslc run` and `dslc eval` read them as detections.
    detection_outputs: ClassVar[tuple[str, ...]] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- compile time
    def resolve(self, ins: list[TensorType], a: dict[str, Any]) -> dict[str, Any]:
        """Normalize attributes once the input types are known (e.g. kernel=3 -> (3, 3))."""
        return a

    def infer(self, ins: list[TensorType], a: dict[str, Any]) -> TensorType | list[TensorType]:
        raise NotImplementedError

    def positions(self, node: Node, flow: Flow) -> Axes | list[Axes]:
        """How the op moves the positions of a sequence, for a decoder with a cache
        (ir/causal.py): its outputs' sequence axes from its inputs', by one of Flow's rules
        (`flow.same(node)` for an elementwise op). The default declares none: a model whose
        sequence reaches the op is not cached."""
        return flow.undeclared(node)

    def params(self, ins: list[TensorType], a: dict[str, Any]) -> dict[str, ParamSpec]:
        return {}

    def tables(self, ins: list[TensorType], a: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Shapes of the constant tensors the ONNX emission builds from the attributes and the
        sizes (a sinusoidal table, an averaging matrix), which dslc.ir.limits bounds before
        anything is built. Scalars and short index lists need not be listed."""
        return {}

    def roi_image(self, node: Node) -> tuple[float, float] | None:
        """For an op with `rois_input`: the (height, width) in pixels of the images its RoIs
        lie in, where the sizes are known."""
        return None

    def num_tokens(self, node: Node) -> int | None:
        """For an op that reads token ids (embedding): how many ids its input may hold."""
        return None

    def torch_penalty(self, term: Any, model: str) -> str:
        """For a penalty (family "penalty"): its value as Python over the module `model`."""
        raise NotImplementedError

    def inference_affine(self, node: Node, weights: dict[str, Any]) -> tuple[Any, Any]:
        """(scale, shift) per channel, float64, for ops with `affine_in_inference`."""
        raise NotImplementedError

    # ---- cost
    def macs(self, node: Node) -> Dim:
        """Multiply-accumulates of one example (the batch dim, dim 0, left out), for
        `dslc summary`. Counted where an op multiplies by weights or by another tensor (dense,
        convolutions, attention); elementwise ops, normalization and pooling count 0, as in
        fvcore and torchvision's published operation counts."""
        return 0

    # ---- PyTorch
    # The op's PyTorch form is a module attribute built by torch_module (layers with parameters
    # or state: linear, conv, batch norm, dropout); otherwise a function call in forward.
    module: ClassVar[bool] = False
    # An op without tensor inputs that an assignment names (`gamma = parameter(...)`): the
    # assignment's name is its node's (its attribute and state_dict key).
    named_by_target: ClassVar[bool] = False
    # Attributes a functional op's torch_call prints with repr only, so that a block class may
    # print an expression there instead (drop_path's p: `drop_path(x, self.drop, ...)`).
    forward_attrs: ClassVar[tuple[str, ...]] = ()
    # Generated helper classes that torch_module constructs: name -> source, emitted once per
    # file before the model (an op whose forward is more than one expression, like attention).
    torch_helpers: ClassVar[dict[str, str]] = {}

    def dim_origins(self, node: Node) -> list[int] | None:
        """For an op that reorders its input's dims (permute, transpose): output dim i is dim
        [i] of input 0, so a block class can follow a channel count through it."""
        return None

    def made_dims(self, node: Node) -> tuple[int, ...]:
        """Output dims that an attribute sets (a convolution's out_channels, a linear layer's
        out_features): a block class writes them from that attribute's expression even where
        the input's dim happens to have the same size."""
        return ()

    def model_helpers(self, nodes: list[Node]) -> dict[str, str]:
        """The helpers this op's nodes in one model need together (attention: a cache-aware
        form where every layer can be cached); by default each node's."""
        out: dict[str, str] = {}
        for node in nodes:
            out = {**out, **{k: v for k, v in self.node_helpers(node).items() if k not in out}}
        return out

    def node_helpers(self, node: Node) -> dict[str, str]:
        """The helpers this node's PyTorch form uses (an op whose helper only some of its forms
        need, such as layer_norm over an inner axis, says so per node)."""
        return self.torch_helpers

    def torch_module(self, node: Node) -> Ctor | None:
        """The nn.Module constructor, for ops with `module` set."""
        return None

    def torch_layer(self, node: Node) -> Ctor | None:
        """The nn.Module form of a functional op (nn.ReLU() for relu), so that it can stand in
        an nn.Sequential; None where torch has none."""
        return self.torch_module(node)

    def torch_param(self, node: Node, key: str) -> tuple[str, str]:
        """The module class that holds parameter `key` and its attribute there, for grouping
        initializers by module type: ("nn.Conv2d", "weight")."""
        made = self.torch_module(node)
        return (made.func if made else self.name), key

    def torch_call(self, node: HasAttrs, args: list[str], module: str | None) -> str:
        return f"{module}({', '.join(args)})"

    def torch_targets(self, names: list[str]) -> str:
        """The left side of `names = torch_call(...)` for an op with several outputs, where
        the call's result nests them (nn.LSTM's `seq, (h, c)`); `_` names an unread one."""
        return ", ".join(names)

    # ---- ONNX
    def onnx(self, node: Node, b: OnnxBuilder, ins: list[str], outs: list[str]) -> None:
        raise NotImplementedError

    @property
    def node_prefix(self) -> str:
        return self.prefix or self.name


REGISTRY: dict[str, OpDef] = {}


def register(cls: type[OpDef]) -> type[OpDef]:
    assert cls.name not in REGISTRY, f"op {cls.name} registered twice"
    REGISTRY[cls.name] = cls()
    return cls


# Names other frameworks give ops that dslc has under another name (torchvision, torch, Keras):
# a spec written from memory of those gets the op's name in the hint.
ALIASES = {
    "stochastic_depth": ("drop_path", "torchvision's stochastic_depth"),
    "repeat": ("tile", "torch's Tensor.repeat"),
    "broadcast_to": ("expand", "torch.broadcast_to"),
    "swish": ("silu", "swish is SiLU"),
    "hard_swish": ("hardswish", "torch's hardswish"),
    "dense": ("linear", "Keras's Dense"),
    "multihead_attention": ("attention", "self-attention; cross_attention for two inputs"),
    "layernorm": ("layer_norm", "torch's LayerNorm"),
    "batchnorm": ("batch_norm", "torch's BatchNorm2d"),
    "gru_cell": ("gru", "a layer over the whole sequence"),
    "lstm_cell": ("lstm", "a layer over the whole sequence"),
}


def suggest(name: str, candidates: list[str]) -> str | None:
    alias = ALIASES.get(name.lower())
    if alias is not None and alias[0] in candidates:
        return f"did you mean '{alias[0]}'? ({alias[1]})"
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def ntuple(value: Any, n: int, op: str, attr: str) -> tuple[int, ...]:
    """An int repeated n times, or a list of exactly n ints."""
    if isinstance(value, int):
        return (value,) * n
    if len(value) != n:
        raise SpecError(f"{op}: {attr} has {len(value)} values but the input has {n} spatial dims")
    return tuple(value)


def expect_rank(op: str, t: TensorType, ranks: tuple[int, ...], layout: str = "") -> None:
    if t.rank not in ranks:
        want = " or ".join(map(str, ranks))
        raise SpecError(f"{op} expects a rank-{want} input{layout}, got {t}")


def known_channels(op: str, x: TensorType) -> int:
    """The channel count of (N, C, ...), which layers that hold per-channel parameters need."""
    c = x.shape[1]
    if not isinstance(c, int):
        raise SpecError(f"{op} needs a known channel count in dim 1, got {x}")
    return c


def expect_f32(op: str, t: TensorType, what: str = "input") -> None:
    """Layers with parameters: the parameters are f32, so the input (`what`) must be too."""
    if t.dtype != "f32":
        raise SpecError(
            f"{op} has f32 parameters, so its {what} must be f32, got {t}",
            hint="declare the input as f32 (other float types come later)",
        )


def norm_axis(op: str, axis: int, rank: int) -> int:
    """A dim index of a rank-`rank` tensor, negative counting from the end, as 0..rank-1."""
    if not -rank <= axis < rank:
        raise SpecError(f"{op}: axis {axis} is out of range for rank {rank}")
    return axis % rank


def expect_float(op: str, t: TensorType) -> None:
    if not t.dtype.startswith(("f", "bf")):
        raise SpecError(f"{op} expects a floating-point input, got {t}", hint="declare it as f32")


def per_example(t: TensorType) -> Dim:
    """Elements of one example of t: the product of every dim but the batch dim."""
    return dim_prod(t.shape[1:])


def weighted_macs(t: TensorType, per_element: int) -> Dim:
    """MACs of an op that does `per_element` multiply-accumulates for each element of t."""
    return dim_mul(per_example(t), per_element)
