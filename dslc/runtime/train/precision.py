"""Mixed precision for `dslc train --precision`: the weights and the optimizer stay float32;
the forward pass (and the loss) runs under torch.autocast.

    fp32   no autocast (the default)
    bf16   autocast to bfloat16, on CPU and CUDA: float32's exponent range, so no loss scaling
    fp16   autocast to float16 with a GradScaler, which scales the loss so that small gradients
           do not underflow and skips the steps whose gradients overflowed; on CUDA, and on
           CPU too (torch >= 2.3 has CPU float16 autocast and GradScaler("cpu")), where it is
           slow on most processors (NOTE), but runs the same scaler arithmetic as CUDA: an fp16
           recipe (its overflows, its loss scale) can be checked before it goes to a GPU

Validation runs under the same autocast as training, so its loss is the one being trained."""

from __future__ import annotations

import contextlib
from typing import Any

CHOICES = ("fp32", "bf16", "fp16")
NOTE = (
    "note: --precision fp16 on CPU is slow on most processors, which lack float16 arithmetic "
    "(bench/precision.py: a step 4 to 13 times as long as fp32); bf16 is fast on CPU"
)


def note(kind: str, device: Any) -> str | None:
    """What to tell a user of this precision on this device before training, or None."""
    return NOTE if kind == "fp16" and device.type == "cpu" else None


def autocast(kind: str, device: Any) -> Any:
    """The context the forward pass and the loss run in."""
    if kind == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if kind == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def scaler(kind: str, device: Any) -> Any:
    """A GradScaler for fp16, else None (bf16 and fp32 need no loss scaling)."""
    if kind != "fp16":
        return None
    import torch

    return torch.amp.GradScaler(device.type)
