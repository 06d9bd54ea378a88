"""The op registry: importing this package registers every op, loss and optimizer."""

from dslc.ops import (  # noqa: F401
    activation,
    conv,
    conv_transpose,
    dense,
    elementwise,
    loss,
    norm,
    norm_local,
    optim,
    pool,
    resize,
    schedule,
    shape,
    stochastic,
)
from dslc.ops.base import REGISTRY, Attr, OpDef, ParamSpec, suggest

FAMILIES = (
    "dense",
    "conv",
    "pool",
    "norm",
    "activation",
    "shape",
    "elementwise",
    "stochastic",
    "loss",
    "penalty",
    "optimizer",
    "schedule",
)

__all__ = ["REGISTRY", "FAMILIES", "Attr", "OpDef", "ParamSpec", "suggest"]
