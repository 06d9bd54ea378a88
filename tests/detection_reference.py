"""torchvision's detection code as the reference for dslc's detection ops.

torchvision's Python code (AnchorGenerator, RegionProposalNetwork, RoIHeads, BoxCoder) runs
here; its C++ kernels do not (tests/reference.py says why). `detection_package()` imports
torchvision.models.detection with `torchvision.ops.boxes.nms` replaced by `reference_nms`,
which this file writes from the definition of greedy non-maximum suppression, in float64
NumPy: sort by score, keep the best box, drop every box whose IoU with it exceeds the
threshold, repeat. torchvision's batched_nms picks between two code paths by input size;
both are its own, and the test uses the exact one, `_batched_nms_vanilla` (NMS class by class),
for every size: the other (`_batched_nms_coordinate_trick`) offsets each class's boxes by a
large number, which rounds IoUs in float32 and is exact only up to that rounding. Likewise
`torchvision.ops.poolers.roi_align` (MultiScaleRoIAlign's kernel) becomes `ref_roi_align`,
written from RoI Align's definition in float64 loops."""

from __future__ import annotations

import importlib
import math
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
    """torchvision.models.detection, its NMS and RoI align the references (see the module
    docstring)."""
    torchvision_models()  # imports torchvision, stubbing what its missing kernels need
    boxes = importlib.import_module("torchvision.ops.boxes")
    boxes.nms = reference_nms
    boxes._batched_nms_coordinate_trick = boxes._batched_nms_vanilla
    importlib.import_module("torchvision.ops.poolers").roi_align = reference_roi_align
    return importlib.import_module("torchvision.models.detection")


def reference_roi_align(x, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """torchvision.ops.roi_align's signature over `ref_roi_align`."""
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    out = ref_roi_align(
        x.detach().numpy(), rois.detach().numpy(), size, spatial_scale, sampling_ratio, aligned
    )
    return torch.from_numpy(out).to(x.dtype)


# ---- RoI align, from the definition (Mask R-CNN's: bilinear samples, averaged per bin)


def bilinear(f: np.ndarray, y: float, x: float) -> np.ndarray:
    """f (C, H, W) at (y, x): 0 beyond one pixel outside the map, the edge value up to it."""
    _, h, w = f.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(f.shape[0])
    y, x = min(max(y, 0.0), h - 1), min(max(x, 0.0), w - 1)
    y0, x0 = math.floor(y), math.floor(x)
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * f[:, y0, x0]
        + (1 - ly) * lx * f[:, y0, x1]
        + ly * (1 - lx) * f[:, y1, x0]
        + ly * lx * f[:, y1, x1]
    )


def ref_roi_align(x, rois, size, scale=1.0, sampling=-1, aligned=False) -> np.ndarray:
    x, rois = np.asarray(x, np.float64), np.asarray(rois, np.float64)
    (ph, pw), offset = size, 0.5 if aligned else 0.0
    out = np.zeros((len(rois), x.shape[1], ph, pw))
    for k, (n, x1, y1, x2, y2) in enumerate(rois):
        sx, sy, ex, ey = (v * scale - offset for v in (x1, y1, x2, y2))
        rw, rh = (ex - sx, ey - sy) if aligned else (max(ex - sx, 1.0), max(ey - sy, 1.0))
        gh = sampling if sampling > 0 else math.ceil(rh / ph)
        gw = sampling if sampling > 0 else math.ceil(rw / pw)
        for i in range(ph):
            for j in range(pw):
                samples = [
                    bilinear(
                        x[int(n)],
                        sy + (i + (a + 0.5) / gh) * rh / ph,
                        sx + (j + (b + 0.5) / gw) * rw / pw,
                    )
                    for a in range(gh)
                    for b in range(gw)
                ]
                out[k, :, i, j] = np.sum(samples, axis=0) / max(gh * gw, 1)
    return out
