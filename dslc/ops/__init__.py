"""The op registry: importing this package registers every op, loss and optimizer."""

from dslc.ir.graph import ParamSpec
from dslc.ops import (  # noqa: F401
    activation,
    anchors,
    attention,
    attention_parts,
    boxes,
    broadcast,
    clip,
    conv,
    conv_transpose,
    cross_attention,
    dense,
    detection_loss,
    detections,
    elementwise,
    embedding,
    gated,
    index,
    learned,
    loss,
    nms,
    norm,
    norm_local,
    optim,
    pool,
    proposals,
    recurrent,
    reduce,
    resize,
    roi,
    schedule,
    select,
    shape,
    stochastic,
    tensor,
)
from dslc.ops.base import REGISTRY, Attr, OpDef, suggest

# Families of ops that are layers, applied in a model's graph; the rest belong to training.
LAYER_FAMILIES = (
    "dense",
    "embedding",
    "attention",
    "recurrent",
    "conv",
    "pool",
    "norm",
    "activation",
    "shape",
    "elementwise",
    "stochastic",
    "learned",
    "detection",
)
FAMILIES = (*LAYER_FAMILIES, "loss", "penalty", "optimizer", "schedule")

__all__ = ["REGISTRY", "FAMILIES", "LAYER_FAMILIES", "Attr", "OpDef", "ParamSpec", "suggest"]
