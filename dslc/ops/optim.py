"""Optimizers: the `optimizer = ...` setting of a train section."""

from __future__ import annotations

from dslc.diagnostics import SpecError
from dslc.ops.base import Attr, OpDef, register

LR = Attr("lr", "float", doc="learning rate", positive=True)
WD = Attr(
    "weight_decay", "float", 0.0, "L2 penalty: weight_decay * w added to the gradient", minimum=0.0
)
BETAS = Attr("betas", "floats", (0.9, 0.999), "decay rates of the moment estimates")
EPS = Attr("eps", "float", 1e-8, "added to the denominator", positive=True)


class Optimizer(OpDef):
    family = "optimizer"
    inputs = ()
    torch_class: str

    def resolve(self, ins, a):
        if a.get("nesterov") and a.get("momentum", 0) <= 0:
            raise SpecError("sgd: nesterov needs momentum > 0")
        if "betas" in a and (len(a["betas"]) != 2 or not all(0 <= b < 1 for b in a["betas"])):
            raise SpecError(
                f"{self.name}: betas must be two numbers in [0, 1), got {list(a['betas'])}"
            )
        return a

    def torch_factory(self, attrs: dict, params: str) -> str:
        """`torch.optim.X(params, lr=..., ...)`, naming only what differs from PyTorch's default."""
        args = [params]
        for at in self.attrs:
            v = attrs[at.name]
            if at.required or v != at.default:
                args.append(f"{at.name}={tuple(v) if isinstance(v, tuple) else v!r}")
        return f"torch.optim.{self.torch_class}({', '.join(args)})"


def optimizer(name: str, torch_class: str, doc: str, attrs: tuple[Attr, ...], example: str) -> None:
    register(
        type(
            torch_class,
            (Optimizer,),
            {
                "name": name,
                "torch_class": torch_class,
                "doc": doc,
                "attrs": attrs,
                "example": f"optimizer = {example}",
            },
        )
    )


optimizer(
    "sgd",
    "SGD",
    "Stochastic gradient descent, with optional (Nesterov) momentum.",
    (
        LR,
        Attr("momentum", "float", 0.0, "momentum factor", minimum=0.0),
        Attr("nesterov", "bool", False, "Nesterov momentum"),
        Attr("dampening", "float", 0.0, "dampening for momentum", minimum=0.0),
        WD,
    ),
    "sgd(lr=0.1, momentum=0.9)",
)
optimizer(
    "adam",
    "Adam",
    "Adam: adaptive moment estimation.",
    (
        Attr("lr", "float", 1e-3, "learning rate", positive=True),
        BETAS,
        EPS,
        WD,
        Attr("amsgrad", "bool", False, "use the AMSGrad variant"),
    ),
    "adam(lr=1e-3)",
)
optimizer(
    "adamw",
    "AdamW",
    "Adam with decoupled weight decay.",
    (
        Attr("lr", "float", 1e-3, "learning rate", positive=True),
        BETAS,
        EPS,
        Attr("weight_decay", "float", 1e-2, "decoupled weight decay", minimum=0.0),
    ),
    "adamw(lr=3e-4, weight_decay=0.1)",
)
optimizer(
    "rmsprop",
    "RMSprop",
    "RMSProp: divide by a running average of squared gradients.",
    (
        Attr("lr", "float", 1e-2, "learning rate", positive=True),
        Attr("alpha", "float", 0.99, "smoothing constant", minimum=0.0),
        EPS,
        Attr("momentum", "float", 0.0, "momentum factor", minimum=0.0),
        Attr("centered", "bool", False, "normalize by the gradient's estimated variance"),
        WD,
    ),
    "rmsprop(lr=1e-3)",
)
