"""Fine-tuning in `dslc train`: starting from a weights file (`--init-from`, `init_from =`),
and frozen layers (`freeze =`, until `unfreeze_at =`).

Loading is strict: every key of the model must be in the file with the model's shape, and the
file may hold nothing else; otherwise the command stops with a table of the missing,
unexpected and mis-shaped keys. `--allow-missing PATTERN` (and `allow_missing =`) lets keys
matching it be missing or of another shape (a replaced head): they keep their fresh init. The
file is read by dslc.backends.weights, which never unpickles arbitrary objects.

A frozen parameter has requires_grad False, so it has no gradient and the optimizer (which
holds every parameter, so unfreezing needs no new one) leaves it alone, weight decay too. A
batch norm whose parameters and buffers are all frozen stays in eval mode while the model
trains: its running statistics stay as loaded. Which parameters are frozen depends only on the
epoch, so a resumed run freezes as the uninterrupted one did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dslc.backends.weights import load_weights
from dslc.errors import DslcError
from dslc.ir.groups import matches
from dslc.runtime.train.checkpoint import tied_aliases

SHOWN = 20  # rows of the mismatch table; the rest are counted


def init_from(module: torch.nn.Module, path: Path, allow: tuple[str, ...], model: str) -> str:
    """Load `path` into `module`; returns a one-line account of what was loaded."""
    expected = module.state_dict()
    for pattern in allow:
        if not any(matches(k, pattern) for k in expected):
            raise DslcError(
                f"--allow-missing '{pattern}' matches no key of model {model}",
                hint=f"its keys start: {', '.join(list(expected)[:4])}",
            )
    arrays = load_weights(path)
    aliases = tied_aliases(expected)
    rows, fresh = _problems(expected, arrays, aliases, allow)
    if rows:
        raise DslcError(_table(path, model, rows), hint=_hint(rows))
    with torch.no_grad():
        for key, target in expected.items():
            if key in arrays and key not in fresh:
                target.copy_(torch.from_numpy(arrays[key]))
    loaded = len(expected) - len(fresh) - len(aliases - arrays.keys())
    kept = f"; {len(fresh)} kept their fresh init ({', '.join(sorted(fresh)[:3])})" if fresh else ""
    return f"started from {path}: {loaded} tensors{kept}"


def _problems(
    expected: dict[str, Any], arrays: dict[str, Any], aliases: set[str], allow: tuple[str, ...]
) -> tuple[list[tuple[str, str, str]], set[str]]:
    """(key, in the file, in the model) for each key that does not fit, and the allowed keys
    that keep their init."""
    rows, fresh = [], set()
    for key, t in expected.items():
        shape = list(t.shape)
        if key in arrays and list(arrays[key].shape) == shape or key in aliases:
            continue
        if any(matches(key, p) for p in allow):
            fresh.add(key)
        else:
            got = str(list(arrays[key].shape)) if key in arrays else "missing"
            rows.append((key, got, str(shape)))
    rows += [(k, str(list(a.shape)), "unexpected") for k, a in arrays.items() if k not in expected]
    return rows, fresh


def _table(path: Path, model: str, rows: list[tuple[str, str, str]]) -> str:
    missing = sum(r[1] == "missing" for r in rows)
    unexpected = sum(r[2] == "unexpected" for r in rows)
    other = len(rows) - missing - unexpected
    head = (
        f"the weights in {path} do not fit model {model}: {missing} missing, "
        f"{unexpected} unexpected, {other} of another shape"
    )
    shown = [("key", "in the file", "in the model"), *rows[:SHOWN]]
    width = [max(len(r[i]) for r in shown) for i in range(2)]
    lines = [f"    {r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]}" for r in shown]
    more = [f"    ... and {len(rows) - SHOWN} more"] if len(rows) > SHOWN else []
    return "\n".join([head, *lines, *more])


def _hint(rows: list[tuple[str, str, str]]) -> str:
    if all(r[2] != "unexpected" for r in rows):
        module = rows[0][0].rsplit(".", 1)[0]
        return (
            f"for a replaced layer, --allow-missing '{module}.*' keeps its fresh init; for "
            "another layout, `dslc weights map SPEC WEIGHTS -o mapped.safetensors`"
        )
    return (
        "give the spec and --param values the weights were trained with, or map another "
        "layout: `dslc weights map SPEC WEIGHTS -o mapped.safetensors`"
    )


class Freezer:
    """The frozen parameters and batch norms of a model, by the epoch."""

    def __init__(self, module: torch.nn.Module, patterns: tuple[str, ...], until: int | None):
        self.patterns, self.until = patterns, until
        self.params = [p for k, p in module.named_parameters() if self._frozen(k)]
        self.norms = [
            m
            for path, m in module.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            and all(self._frozen(f"{path}.{k}") for k, _ in _own_state(m))
        ]
        for p in self.params:  # before DistributedDataParallel sees which ones need gradients
            p.requires_grad_(not self.active(0))

    def _frozen(self, key: str) -> bool:
        return any(matches(key, p) for p in self.patterns)

    def active(self, epoch: int) -> bool:
        """Whether the layers are frozen in epoch `epoch` (0-based; unfreeze_at counts from 1)."""
        return bool(self.patterns) and (self.until is None or epoch + 1 < self.until)

    def train(self, model: torch.nn.Module, epoch: int) -> None:
        """model.train(), with the frozen batch norms left in eval mode."""
        frozen = self.active(epoch)
        for p in self.params:
            p.requires_grad_(not frozen)
        model.train()
        if frozen:
            for m in self.norms:
                m.eval()


def _own_state(m: torch.nn.Module) -> list[tuple[str, Any]]:
    return [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
