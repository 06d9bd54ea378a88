"""Mixed precision for `dslc train --precision`: the weights and the optimizer stay float32;
the forward pass (and the loss) runs under torch.autocast.

    fp32   no autocast (the default)
    bf16   autocast to bfloat16, on CPU and CUDA: float32's exponent range, so no loss scaling
    fp16   autocast to float16 with a GradScaler, which scales the loss so that small gradients
           do not underflow and skips the steps whose gradients overflowed; CUDA only, since
           CPU float16 kernels are few and slow

Validation runs under the same autocast as training, so its loss is the one being trained."""

from __future__ import annotations

import contextlib
from typing import Any

from dslc.errors import DslcError

CHOICES = ("fp32", "bf16", "fp16")


def check(kind: str, device: Any) -> None:
    """fp16 needs CUDA: refused before anything is written."""
    if kind == "fp16" and device.type != "cuda":
        raise DslcError(
            "--precision fp16 needs CUDA (a GradScaler for float16 gradients)",
            hint="add --device cuda on a machine with a GPU, or use --precision bf16 on CPU",
        )


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
