"""TensorBoard event files in runs/NAME/tensorboard/, when the tensorboard package is installed
(the optional extra `pip install dslc[tensorboard]`); without it, nothing is written and
nothing is said. Each metrics.jsonl row becomes scalars at step = the epoch, under the row's
names (train_loss, val_loss, val_accuracy, val_macro_f1, lr, ...)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

DIRECTORY = "tensorboard"
_NOT_SCALARS = ("epoch", "step", "seconds")


def available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class Board:
    def __init__(self, out: Path) -> None:
        self.path = out / DIRECTORY
        self.writer: Any = None
        self.enabled = available()

    def add(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run replaces the epochs logged after its checkpoint
            self.writer = SummaryWriter(str(self.path), purge_step=row["epoch"])
        for key, value in row.items():
            if key not in _NOT_SCALARS and isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
