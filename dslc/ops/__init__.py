"""The op registry: importing this package registers every op, loss and optimizer."""

from dslc.ops import activation, conv, dense, elementwise, loss, norm, optim, pool, shape  # noqa: F401
from dslc.ops.base import REGISTRY, Attr, OpDef, ParamSpec, suggest

FAMILIES = (
    "dense",
    "conv",
    "pool",
    "norm",
    "activation",
    "shape",
    "elementwise",
    "loss",
    "optimizer",
)

__all__ = ["REGISTRY", "FAMILIES", "Attr", "OpDef", "ParamSpec", "suggest"]
