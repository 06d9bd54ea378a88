"""torchvision's detection code as the reference for dslc's detection ops.

torchvision's Python code (AnchorGenerator, RegionProposalNetwork, RoIHeads, BoxCoder) runs
here; its C++ kernels do not (tests/reference.py says why). `detection_package()` imports
torchvision.models.detection with `torchvision.ops.boxes.nms` replaced by `reference_nms`,
which this file writes from the definition of greedy non-maximum suppression, in float64
NumPy: sort by score, keep the best box, drop every box whose IoU with it exceeds the
threshold, repeat. torchvision's batched_nms picks between two code paths by input size;
both are its own, and the test uses the exact one, `_batched_nms_vanilla` (NMS class by class),
for every size: the other (`_batched_nms_coordinate_trick`) offsets each class's boxes by a
large number, which rounds IoUs in float32 and is exact only up to that rounding."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import torch
from reference import torchvision_models


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes greedy NMS keeps, by decreasing score (float64 IoUs)."""
    b = boxes.detach().double().numpy()
    order = np.argsort(-scores.detach().numpy(), kind="stable")
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    alive = np.ones(len(b), bool)
    keep = []
    for i in order:
        if not alive[i]:
            continue
        keep.append(i)
        lt = np.maximum(b[i, :2], b[:, :2])
        rb = np.minimum(b[i, 2:], b[:, 2:])
        inter = np.clip(rb - lt, 0, None).prod(axis=1)
        iou = inter / (area[i] + area - inter)
        alive &= ~(iou > iou_threshold)
    return torch.as_tensor(np.asarray(keep, np.int64))


def detection_package() -> Any:
    """torchvision.models.detection, its NMS the reference (see the module docstring)."""
    torchvision_models()  # imports torchvision, stubbing what its missing kernels need
    boxes = importlib.import_module("torchvision.ops.boxes")
    boxes.nms = reference_nms
    boxes._batched_nms_coordinate_trick = boxes._batched_nms_vanilla
    return importlib.import_module("torchvision.models.detection")
