"""Losses: each binds a model output (the prediction) and a declared target."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ops.base import Attr, OpDef, register
from dslc.types import FLOAT_DTYPES, INT_DTYPES, TensorType

SCALAR = TensorType("f32", ())


class Loss(OpDef):
    family = "loss"
    inputs = ("input", "target")
    attrs = (
        Attr("reduction", "str", "mean", "mean or sum over the batch", choices=("mean", "sum")),
    )
    torch_fn: str
    classifies = False  # with a class-index target, the prediction's argmax is a class

    def infer(self, ins, a):
        x, t = ins
        if x.dtype not in FLOAT_DTYPES:
            raise SpecError(f"{self.name}: the prediction must be floating point, got {x}")
        self.check(x, t)
        return SCALAR

    def check(self, x: TensorType, t: TensorType) -> None:
        """Default rule: the target has the prediction's shape and dtype."""
        if t.dtype != x.dtype or t.shape != x.shape:
            raise SpecError(f"{self.name}: the target {t} must have the prediction's type {x}")

    def torch_call(self, node, args, module):
        extra = "".join(
            f", {k}={v!r}" if not isinstance(v, str) else f', {k}="{v}"'
            for k, v in node.attrs.items()
            if v != next(at.default for at in self.attrs if at.name == k)
        )
        return f"F.{self.torch_fn}({args[0]}, {args[1]}{extra})"


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


loss("mse", "mse_loss", "Mean squared error.", "mse(y_hat, y)")
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
)


def _check_class_target(self, x: TensorType, t: TensorType) -> None:
    """Class indices (N, d...) for input (N, C, d...), or probabilities of the input's shape."""
    if x.rank < 2 and self.name == "nll":
        raise SpecError(f"{self.name}: the prediction must be (N, C, ...), got {x}")
    if t.dtype in INT_DTYPES:
        want = (x.shape[0], *x.shape[2:]) if x.rank >= 2 else ()
        if t.shape != want:
            raise SpecError(
                f"{self.name}: class-index target {t} must have shape "
                f"{x.with_shape(want).shape_str()} for prediction {x}",
                hint="class indices drop the class dim C; "
                "one-hot or probability targets have the prediction's shape",
            )
    elif self.name == "nll":
        raise SpecError(f"nll: the target must hold class indices (i64), got {t}")
    elif t.dtype != x.dtype or t.shape != x.shape:
        raise SpecError(f"{self.name}: probability target {t} must have the prediction's type {x}")


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
    ),
)
loss(
    "nll",
    "nll_loss",
    "Negative log-likelihood of log-probabilities (N, C, ...) and class indices.",
    "nll(log_probs, y)",
    check=_check_class_target,
    classifies=True,
)
