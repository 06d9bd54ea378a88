"""The accuracy gate of a quantized export (`--validate DATA`): the float and the quantized model
run in onnxruntime on the same inputs, and the spec's own metric is computed on both from the
data's targets: the accuracy of its first classification loss where it has one, else its loss.
The quantized model passes when the metric drops by at most `max_drop`: points of accuracy
(default 1), or percent of the float model's loss (default 2)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dslc.api import Spec
from dslc.errors import DslcError
from dslc.ir.types import DTYPES
from dslc.runtime.train import data, formats
from dslc.runtime.train.contract import Contract, Signature, contract

DEFAULT_DROP = {"accuracy": 1.0, "loss": 2.0}  # points; percent of the loss
BATCH = 64


@dataclass
class Verdict:
    metric: str  # "accuracy" or "loss"
    float_value: float
    quant_value: float
    diffs: dict[str, float]  # output -> largest |float - quantized|
    drop: float  # in points (accuracy) or percent (loss)
    limit: float
    examples: int

    @property
    def ok(self) -> bool:
        return self.drop <= self.limit

    def lines(self, how: str) -> list[str]:
        unit = "points" if self.metric == "accuracy" else "% of the loss"
        show = (
            (lambda v: f"{100 * v:.2f}%") if self.metric == "accuracy" else (lambda v: f"{v:.4g}")
        )
        diffs = ", ".join(f"{k} {v:.3g}" for k, v in self.diffs.items())
        return [
            f"validation on {self.examples} examples: {self.metric} float {show(self.float_value)}"
            f", {how} {show(self.quant_value)} (drop {self.drop:.2f} {unit}, at most "
            f"{self.limit:g} allowed)",
            f"largest |float - {how}| per output: {diffs}",
        ]


def input_signature(spec: Spec) -> Signature:
    """The spec's inputs as the data readers check them (no train section needed)."""
    return {
        v.name: (
            DTYPES[v.type.dtype][1],
            tuple(d if isinstance(d, int) else str(d) for d in v.type.shape),
        )
        for v in spec.graph.inputs
    }


def read_inputs(spec: Spec, text: str, flag: str) -> dict[str, np.ndarray]:
    """The model inputs held in data file `text` (other arrays, such as targets, are ignored)."""
    signature = input_signature(spec)
    arrays = formats.read(text, signature, {})
    missing = [k for k in signature if k not in arrays]
    if missing:
        raise DslcError(
            f"{flag} {text} has no array '{missing[0]}' (the inputs of model {spec.name} are "
            f"{', '.join(signature)})",
            hint=f"it holds {', '.join(arrays) or 'nothing'}",
        )
    return data.check(
        {k: a for k, a in arrays.items() if k in signature}, signature, spec.name, f"{flag} {text}"
    )


def read_validation(spec: Spec, text: str) -> tuple[Contract, dict[str, np.ndarray]]:
    if spec.graph.training is None:
        raise DslcError(
            f"--validate needs the targets and the loss of a train section, and model "
            f"{spec.name} has none",
            hint="add a train section to the spec, or leave out --validate",
        )
    c = contract(spec)
    return c, data.load(text, c.arrays, c.name)


def validate(
    c: Contract, arrays: dict, float_path: Path, quant_path: Path, max_drop: float | None
) -> Verdict:
    ours, theirs = _outputs(float_path, c, arrays), _outputs(quant_path, c, arrays)
    metric = "accuracy" if "accuracy" in c.metrics else "loss"
    f, q = _metric(c, arrays, ours, metric), _metric(c, arrays, theirs, metric)
    drop = 100 * (f - q) if metric == "accuracy" else 100 * (q - f) / max(abs(f), 1e-12)
    diffs = {k: float(np.abs(ours[k] - theirs[k]).max()) for k in c.outputs}
    limit = DEFAULT_DROP[metric] if max_drop is None else max_drop
    return Verdict(metric, f, q, diffs, drop, limit, len(next(iter(arrays.values()))))


def _outputs(path: Path, c: Contract, arrays: dict) -> dict[str, np.ndarray]:
    from dslc.runtime.run import open_session

    s = open_session(str(path), "cpu")
    names = [o.name for o in s.get_outputs()]
    n = len(arrays[next(iter(c.inputs))])
    parts = [
        s.run(names, {k: arrays[k][i : i + BATCH] for k in c.inputs}) for i in range(0, n, BATCH)
    ]
    return {k: np.concatenate([p[j] for p in parts]) for j, k in enumerate(names)}


def _metric(c: Contract, arrays: dict, outputs: dict, metric: str) -> float:
    import torch

    from dslc.runtime.train.metrics import accuracy

    values = {
        k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in {**arrays, **outputs}.items()
    }
    with torch.no_grad():
        if metric == "accuracy":
            output, target = c.metrics["accuracy"]
            hits, n = accuracy(values[output], values[target], c.ignore.get(target))
            return hits / max(n, 1)
        loss = c.create_loss()(*(values[k] for k in c.loss_inputs))
    return float(loss)
