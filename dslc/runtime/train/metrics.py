"""Validation metrics, accumulated batch by batch (dslc train's epochs, dslc eval):

    accuracy          argmax over the class dim equals the target (per classifier term)
    top{K}_accuracy   the target is among the K largest scores (K = 5, for more than 5 classes)
    macro_f1          F1 per class, 2 TP / (2 TP + FP + FN), averaged over the classes that occur
                      as a target or a prediction (sklearn's f1_score(average="macro"))
    mae_{o}, rmse_{o} for each regression term (mse, l1, huber, smooth_l1) of output o: the
                      mean absolute and the root mean squared error over all its elements
    loss_{o}          a loss of several terms: each term's value, unweighted, per example
                      (and train_loss_{o}, while training: TermSums)
    map50, map        a detector (the detections op) with per-object targets: mAP@0.5 and
                      mAP@[.5:.95], by pycocotools (mean_ap.py)

A second classifier's keys end in _2 (accuracy_2, macro_f1_2), as METRICS names them. Targets
equal to the loss's ignore_index count for nothing. Confusion matrices are kept for classifiers
of up to MAX_CLASSES classes; F1 is left out beyond."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from dslc.runtime.train import mean_ap, objects
from dslc.runtime.train.contract import Contract

TOP_K = 5
MAX_CLASSES = 1000


class Meter:
    def __init__(self, c: Contract) -> None:
        self.c = c
        self.confusion: dict[
            str, torch.Tensor
        ] = {}  # metric key -> (C, C) counts, true x predicted
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        lay = objects.layout(c) if c.detections else None
        self.detected = mean_ap.Detected(c, lay) if lay is not None else None

    def add(self, values: dict[str, torch.Tensor], examples: int) -> None:
        """One batch: every named tensor (inputs, outputs, targets) and its example count."""
        for key, (output, target) in self.c.metrics.items():
            self._classify(key, _float(values[output]), values[target], self.c.ignore.get(target))
        for output, target in self.c.regressions.items():
            error = (_float(values[output]) - _float(values[target])).flatten()
            self._sum(f"mae_{output}", error.abs().sum().item(), error.numel())
            self._sum(f"rmse_{output}", error.pow(2).sum().item(), error.numel())
        for key, (fn, names) in self.c.terms.items():
            tensors = (_float(values[n]) for n in names)
            self._sum(key, fn(examples, *tensors).item(), examples)
        if self.detected is not None:
            self.detected.add(values, examples)

    def _classify(self, key: str, scores: torch.Tensor, target: torch.Tensor, ignore: Any) -> None:
        dim = 1 if scores.argmax(dim=1).shape == target.shape else -1
        scores = scores.movedim(dim, -1).reshape(-1, scores.shape[dim])
        target = target.reshape(-1)
        if ignore is not None:
            keep = target != ignore
            scores, target = scores[keep], target[keep]
        suffix = key.removeprefix("accuracy")
        predicted = scores.argmax(dim=1)
        self._sum(key, (predicted == target).sum().item(), target.numel())
        classes = scores.shape[1]
        if classes > TOP_K:
            top = scores.topk(TOP_K, dim=1).indices
            hits = (top == target[:, None]).any(dim=1).sum().item()
            self._sum(f"top{TOP_K}_accuracy{suffix}", hits, target.numel())
        if classes <= MAX_CLASSES:
            pairs = torch.bincount(target * classes + predicted, minlength=classes * classes)
            counts = pairs.reshape(classes, classes).cpu()
            self.confusion[key] = self.confusion.get(key, 0) + counts

    def _sum(self, key: str, value: float, count: int) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value
        self.counts[key] = self.counts.get(key, 0) + count

    def results(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for key, total in self.sums.items():
            n = self.counts[key]
            mean = total / n if n else None
            out[key] = math.sqrt(mean) if key.startswith("rmse_") and mean is not None else mean
        for key, confusion in self.confusion.items():
            out[f"macro_f1{key.removeprefix('accuracy')}"] = macro_f1(confusion)
        if self.detected is not None:
            out.update(self.detected.results())
        return dict(sorted(out.items()))


class TermSums:
    """A loss of several terms, while training: each term's value on each micro-batch, summed
    over the epoch's examples, as train_loss_<output> beside train_loss. The terms run again
    without gradients, and with the random generators forked, so that a term that samples
    (a detector's rpn_loss) leaves the run's random stream as it was: its value is an estimate
    of its own sample."""

    def __init__(self, terms: dict[str, tuple[Callable[..., Any], tuple[str, ...]]]) -> None:
        self.terms = terms
        self.sums = dict.fromkeys(terms, 0.0)
        self.examples = 0

    def add(self, values: dict[str, torch.Tensor], examples: int, device: Any) -> None:
        if not self.terms:
            return
        devices = [device] if getattr(device, "type", "cpu") == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            for key, (fn, names) in self.terms.items():
                tensors = (_float(values[n].detach()) for n in names)
                self.sums[key] += fn(examples, *tensors).item()
        self.examples += examples

    def means(self, world: Any, device: Any) -> dict[str, float]:
        """{"train_loss_<o>": mean per example} over every rank, and a fresh start."""
        if not self.terms:
            return {}
        *sums, examples = world.sum([*self.sums.values(), float(self.examples)], device)
        out = {f"train_{k}": v / max(examples, 1.0) for k, v in zip(self.sums, sums, strict=True)}
        self.sums, self.examples = dict.fromkeys(self.terms, 0.0), 0
        return out


def forward(c: Contract, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every named tensor of a batch: its inputs and targets, and the model's outputs."""
    outputs = model(*(batch[k] for k in c.inputs))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return {**batch, **dict(zip(c.outputs, outputs, strict=True))}


def batch_total(c: Contract, loss: torch.Tensor, examples: int) -> float:
    """The batch's loss summed over its examples (a batch mean times the examples)."""
    return loss.item() if c.reduction == "sum" else loss.item() * examples


@torch.no_grad()
def evaluate(
    c: Contract,
    module: Any,
    loss_fn: Any,
    data: Any,
    batch_size: int,
    device: Any,
    autocast: Callable[[], Any],
) -> tuple[float, Meter]:
    """The loss per example over a data set (penalties left out) and its metrics, in eval
    mode, batch by batch; `autocast()` gives the context each forward pass runs in."""
    module.eval()
    total, meter = 0.0, Meter(c)
    import torch

    chunks = list(torch.arange(len(data)).split(batch_size))
    for chunk, part in zip(chunks, data.batches(chunks, 0), strict=True):  # folders decode ahead
        batch = {k: t.to(device) for k, t in part.items()}
        examples = len(chunk)  # images, not the objects of per-object targets
        with autocast():
            values = forward(c, module, batch)
            total += batch_total(c, loss_fn(*(values[k] for k in c.loss_inputs)), examples)
            meter.add(values, examples)
    return total / len(data), meter


def _float(t: torch.Tensor) -> torch.Tensor:
    """Float32 for what autocast may have left in bf16 or f16; class indices as they are."""
    return t.float() if t.is_floating_point() else t


def macro_f1(confusion: torch.Tensor) -> float | None:
    """Macro F1 of a confusion matrix (rows: true classes, columns: predicted), over the
    classes that occur on either side, as sklearn averages them."""
    tp = confusion.diagonal().double()
    true, predicted = confusion.sum(dim=1).double(), confusion.sum(dim=0).double()
    present = (true + predicted) > 0
    if not present.any():
        return None
    f1 = 2 * tp[present] / (true[present] + predicted[present])
    return float(f1.mean())


def accuracy(
    logits: torch.Tensor, target: torch.Tensor, ignore: int | None = None
) -> tuple[float, int]:
    """Examples whose argmax over the class dim (1) equals the target, and the count; targets
    equal to `ignore` (the loss's ignore_index) are not counted."""
    predicted = logits.argmax(dim=1)
    if predicted.shape != target.shape:  # class dim last, as in (N, T, V) language models
        predicted = logits.argmax(dim=-1)
    counted = target != ignore if ignore is not None else torch.ones_like(target, dtype=torch.bool)
    hits = ((predicted == target) & counted).sum().item()
    return float(hits), int(counted.sum().item())
