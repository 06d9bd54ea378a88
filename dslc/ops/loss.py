"""Losses: each binds a model output (the prediction) and a declared target (or a model input,
such as an autoencoder's image); gaussian_kl binds two model outputs."""

from __future__ import annotations

from typing import ClassVar

from dslc.diagnostics import SpecError
from dslc.ir.types import FLOAT_DTYPES, INT_DTYPES, TensorType
from dslc.ops.base import Attr, HasAttrs, OpDef, register

SCALAR = TensorType("f32", ())


class Loss(OpDef):
    family = "loss"
    inputs = ("input", "target")
    attrs = (
        Attr("reduction", "str", "mean", "mean or sum over the batch", choices=("mean", "sum")),
    )
    torch_fn: str
    outputs_only: ClassVar[tuple[int, ...]] = (0,)  # the prediction must be a model output
    torch_defaults: dict[str, object] = {}  # F's defaults where they differ from the spec's

    def infer(self, ins, a):
        x, t = ins
        if x.dtype not in FLOAT_DTYPES:
            raise SpecError(f"{self.name}: the prediction must be floating point, got {x}")
        if a.get("class_dim") == -1:  # (N, ..., C): move C to dim 1, as PyTorch reads it
            x = x.with_shape((x.shape[0], x.shape[-1], *x.shape[1:-1]))
        self.check(x, t)
        _check_weights(self.name, x, a)
        return SCALAR

    def check(self, x: TensorType, t: TensorType) -> None:
        """Default rule: the target has the prediction's shape and dtype."""
        if t.dtype != x.dtype or t.shape != x.shape:
            raise SpecError(f"{self.name}: the target {t} must have the prediction's type {x}")

    def torch_call(self, node, args, module):
        defaults = {at.name: at.default for at in self.attrs} | self.torch_defaults
        extra = "".join(
            f", {k}={_argument(v, k, args[0])}"
            for k, v in node.attrs.items()
            if v != defaults[k] and k != "class_dim"
        )
        # F's losses take the classes in dim 1: (N, T, V) logits become (N, V, T).
        moved = ".movedim(-1, 1)" if node.attrs.get("class_dim") == -1 else ""
        return f"F.{self.torch_fn}({args[0]}{moved}, {args[1]}{extra})"


def _argument(v, key: str, prediction: str) -> str:
    """An attribute as F's keyword argument; class weights as a tensor on the prediction's
    device and dtype."""
    if key in WEIGHTS:
        return f"{prediction}.new_tensor({list(v)!r})"
    return f'"{v}"' if isinstance(v, str) else repr(v)


def _check_weights(op: str, x: TensorType, a) -> None:
    """`weight`: one per class (dim 1 once the class dim is there); `pos_weight`: one per
    output of the last dim, or one for all."""
    if a.get("weight") is not None and (x.rank < 2 or len(a["weight"]) != x.shape[1]):
        raise SpecError(
            f"{op}: weight has {len(a['weight'])} values, but prediction {x} has "
            f"{x.shape[1] if x.rank >= 2 else 'no'} classes",
            hint="one weight per class",
        )
    pos = a.get("pos_weight")
    if pos is not None and len(pos) not in (1, x.shape[-1]):
        raise SpecError(
            f"{op}: pos_weight has {len(pos)} values, but prediction {x} has {x.shape[-1]} "
            "outputs in its last dim",
            hint="one weight for all outputs, or one per output",
        )


WEIGHTS = ("weight", "pos_weight")
WEIGHT = Attr("weight", "floats", None, "a weight per class (rarer classes count more)", minimum=0)
IGNORE = Attr(
    "ignore_index",
    "int",
    -100,
    "a target value that counts for nothing: padding (PyTorch's -100 unless set)",
)


def ignored(term: HasAttrs) -> int | None:
    """The target value a loss term sets to count for nothing, where the spec sets one."""
    value = term.attrs.get(IGNORE.name, IGNORE.default)
    return None if value == IGNORE.default else value


def loss(name: str, torch_fn: str, doc: str, example: str, **body) -> None:
    register(
        type(
            name.title().replace("_", ""),
            (Loss,),
            {
                "name": name,
                "torch_fn": torch_fn,
                "doc": doc,
                "example": f"loss = {example}",
                **body,
            },
        )
    )


loss("mse", "mse_loss", "Mean squared error.", "mse(y_hat, y)", regresses=True)
loss("l1", "l1_loss", "Mean absolute error.", "l1(y_hat, y)", regresses=True)
loss(
    "huber",
    "huber_loss",
    "Huber loss: 0.5 * d^2 where |d| < delta, else delta * (|d| - 0.5 * delta), for d = "
    "prediction - target.",
    "huber(y_hat, y, delta=1.0)",
    regresses=True,
    attrs=(
        *Loss.attrs,
        Attr("delta", "float", 1.0, "where it turns from quadratic to linear", positive=True),
    ),
)
loss(
    "smooth_l1",
    "smooth_l1_loss",
    "Smooth L1 (Fast R-CNN): 0.5 * d^2 / beta where |d| < beta, else |d| - 0.5 * beta; "
    "huber divided by beta.",
    "smooth_l1(box, box_target, beta=0.1)",
    regresses=True,
    attrs=(
        *Loss.attrs,
        Attr(
            "beta", "float", 1.0, "where it turns from quadratic to linear; 0 gives l1", minimum=0.0
        ),
    ),
)
loss(
    "kl_divergence",
    "kl_div",
    "KL(target || prediction) = sum target * (log target - prediction), as F.kl_div: the "
    "prediction holds log-probabilities (after log_softmax), the target probabilities (or "
    "log-probabilities with log_target). batchmean divides the sum by the batch size, which is "
    "the true KL divergence per example; mean divides by the number of elements.",
    "kl_divergence(log_probs, teacher_probs)",
    torch_defaults={"reduction": "mean"},
    attrs=(
        Attr(
            "reduction",
            "str",
            "batchmean",
            "batchmean (sum / batch size), sum or mean (over all elements)",
            choices=("batchmean", "sum", "mean"),
        ),
        Attr("log_target", "bool", False, "the target holds log-probabilities"),
    ),
)
loss(
    "bce",
    "binary_cross_entropy",
    "Binary cross-entropy on probabilities (after a sigmoid).",
    "bce(p, y)",
)
loss(
    "bce_with_logits",
    "binary_cross_entropy_with_logits",
    "Binary cross-entropy on logits (sigmoid built in, numerically stable).",
    "bce_with_logits(z, y)",
    attrs=(
        *Loss.attrs,
        Attr(
            "pos_weight",
            "floats",
            None,
            "how much a positive counts against a negative, for all outputs or each",
            minimum=0,
        ),
    ),
)


def _check_class_target(self, x: TensorType, t: TensorType) -> None:
    """Class indices (N, d...) for input (N, C, d...), or probabilities of the input's shape."""
    if x.rank < 2 and self.name == "nll":
        raise SpecError(f"{self.name}: the prediction must be (N, C, ...), got {x}")
    if t.dtype in INT_DTYPES:
        want = (x.shape[0], *x.shape[2:]) if x.rank >= 2 else ()
        if t.shape != want:
            last = x.rank >= 3 and t.shape == x.shape[:-1]
            raise SpecError(
                f"{self.name}: class-index target {t} must have shape "
                f"{x.with_shape(want).shape_str()} for prediction {x}",
                hint="the classes are the last dim, as in a language model's (N, T, V) logits: "
                f"write {self.name}(..., class_dim=-1)"
                if last
                else "class indices drop the class dim C; "
                "one-hot or probability targets have the prediction's shape",
            )
    elif self.name == "nll":
        raise SpecError(f"nll: the target must hold class indices (i64), got {t}")
    elif t.dtype != x.dtype or t.shape != x.shape:
        raise SpecError(f"{self.name}: probability target {t} must have the prediction's type {x}")


CLASS_DIM = Attr(
    "class_dim",
    "int",
    1,
    "the prediction's class dim: 1, PyTorch's (N, C, ...), or -1, the last, as in a language "
    "model's (N, T, V) logits",
    choices=(1, -1),
)
loss(
    "cross_entropy",
    "cross_entropy",
    "Softmax cross-entropy on logits (N, C, ...); the target holds class indices or probabilities.",
    "cross_entropy(logits, y)",
    check=_check_class_target,
    classifies=True,
    attrs=(
        *Loss.attrs,
        Attr(
            "label_smoothing", "float", 0.0, "mix the target with uniform", minimum=0.0, maximum=1.0
        ),
        CLASS_DIM,
        IGNORE,
        WEIGHT,
    ),
)
loss(
    "nll",
    "nll_loss",
    "Negative log-likelihood of log-probabilities (N, C, ...) and class indices.",
    "nll(log_probs, y)",
    check=_check_class_target,
    classifies=True,
    attrs=(*Loss.attrs, CLASS_DIM, IGNORE, WEIGHT),
)


@register
class GaussianKl(Loss):
    name = "gaussian_kl"
    doc = (
        "The VAE regularizer KL(N(mu, exp(logvar)) || N(0, I)) = -0.5 * sum(1 + logvar - mu^2 - "
        "exp(logvar)), summed over the features of each example and averaged (mean) or summed "
        "(sum) over the batch. Both inputs are model outputs of the same type."
    )
    example = 'loss = bce(recon, image, reduction="sum") + gaussian_kl(mu, logvar, reduction="sum")'
    inputs = ("mu", "logvar")
    attrs = (
        Attr("reduction", "str", "mean", "mean or sum over the batch", choices=("mean", "sum")),
    )
    outputs_only = (0, 1)

    def check(self, x: TensorType, t: TensorType) -> None:
        if t.dtype != x.dtype or t.shape != x.shape:
            raise SpecError(
                f"gaussian_kl: mu {x} and logvar {t} must have the same type",
                hint="the encoder's two heads give one mean and one log-variance per latent dim",
            )
        if x.rank < 2:
            raise SpecError(f"gaussian_kl: mu and logvar must be (N, features...), got {x}")

    def torch_call(self, node, args, module):
        mu, logvar = args
        total = f"torch.sum({logvar}.exp() + {mu}.pow(2) - 1 - {logvar})"
        return f"0.5 * {total}" + (f" / {mu}.shape[0]" if node.attrs["reduction"] == "mean" else "")


@register
class L2(OpDef):
    name = "l2"
    family = "penalty"
    doc = (
        "Explicit L2 penalty, a term of the loss: the sum of squares of the weights, counting "
        "the parameters with more than one dim (linear weights, convolution kernels); biases "
        "and normalization scales and shifts are left out, as are buffers. Scale it: "
        "`1e-4 * l2()`. Unlike an optimizer's weight_decay it is part of the loss value, so it "
        "shows in the logged loss and works the same with any optimizer."
    )
    example = "loss = cross_entropy(logits, y) + 1e-4 * l2()"
    inputs = ()

    def infer(self, ins, a):
        return SCALAR

    def torch_penalty(self, term, model: str) -> str:
        return f"sum(p.pow(2).sum() for p in {model}.parameters() if p.dim() > 1)"
