"""`dslc weights map SPEC WEIGHTS -o mapped.safetensors`: rename the tensors of a checkpoint in
another layout (a hand-written model's `features.0.weight`) to the spec's state_dict keys.

Tensors are matched by module order and shape: the k-th tensor of the file with a given leaf
name and shape (`weight` [64, 3, 3, 3]) becomes the k-th tensor of the model with that leaf name
and shape. That is refused, naming the keys, when it could pair the wrong tensors: when file
and model hold different numbers of tensors of one kind (which to drop is a guess), or when the
tensors of one module of the file would land in different modules of the model. Kinds that only
one side has are reported, not refused: file tensors without a counterpart are left out, and
model keys without one keep their fresh init (train with `--allow-missing`). The file is read
safely (dslc.backends.weights)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from dslc.api import Spec
from dslc.backends.weights import load_weights
from dslc.errors import DslcError

Kind = tuple[str, tuple[int, ...]]  # (leaf name, shape)


def _kind(key: str, shape: tuple[int, ...]) -> Kind:
    return key.rsplit(".", 1)[-1], tuple(shape)


def _by_kind(shapes: dict[str, tuple[int, ...]]) -> dict[Kind, list[str]]:
    out: dict[Kind, list[str]] = defaultdict(list)
    for key, shape in shapes.items():
        out[_kind(key, shape)].append(key)
    return out


def match(
    model: dict[str, tuple[int, ...]], file: dict[str, tuple[int, ...]], path: Path
) -> dict[str, str]:
    """model key -> file key; a DslcError for an ambiguity."""
    ours, theirs = _by_kind(model), _by_kind(file)
    mapping: dict[str, str] = {}
    for kind, keys in ours.items():
        found = theirs.get(kind, [])
        if found and len(found) != len(keys):
            leaf, shape = kind
            raise DslcError(
                f"{path}: ambiguous: {len(found)} tensors '{leaf}' of shape {list(shape)} in the "
                f"file ({_few(found)}) but {len(keys)} in the model ({_few(keys)}); which pair "
                "up is a guess",
                hint="rename these keys by hand, or save the checkpoint without the extra ones",
            )
        mapping.update(zip(keys, found, strict=False))
    _check_modules(mapping, path)
    return mapping


def _check_modules(mapping: dict[str, str], path: Path) -> None:
    """The tensors of one module of the file go to one module of the model."""
    target: dict[str, tuple[str, str]] = {}
    for ours, theirs in mapping.items():
        module, ours_module = theirs.rsplit(".", 1)[0], ours.rsplit(".", 1)[0]
        first = target.setdefault(module, (ours_module, ours))
        if first[0] != ours_module:
            raise DslcError(
                f"{path}: ambiguous: the tensors of module '{module}' would go to two modules "
                f"of the model: {theirs} -> {ours}, but {mapping[first[1]]} -> {first[1]}",
                hint="the two layouts order their modules differently; rename these keys by hand",
            )


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")


def map_weights(spec: Spec, weights: str, out: str) -> list[str]:
    """Write the mapped file; returns the report's lines."""
    path = Path(weights)
    arrays = load_weights(path)
    from dslc.runtime.train.checkpoint import tied_aliases

    state = spec.torch_module().state_dict()  # num_batches_tracked too, which the IR has not
    sharers = tied_aliases(state)
    model = {k: tuple(t.shape) for k, t in state.items() if k not in sharers}
    mapping = match(model, {k: a.shape for k, a in arrays.items()}, path)
    if not mapping:
        raise DslcError(f"{path}: no tensor has the leaf name and shape of one of {spec.name}'s")
    width = max(len(v) for v in mapping.values())
    lines = [f"{mapping[k]:<{width}} -> {k} {list(model[k])}" for k in model if k in mapping]
    left = [k for k in arrays if k not in set(mapping.values())]
    fresh = [k for k in model if k not in mapping]
    if left:
        lines.append(f"left out, no counterpart in {spec.name}: {_few(left)}")
    if fresh:
        lines.append(f"not in the file, keep their fresh init: {_few(fresh)}")
    tensors = {k: arrays[mapping[k]].copy(order="C") for k in model if k in mapping}
    _save(tensors, Path(out))
    lines.append(f"wrote {out}: {len(tensors)} of {len(model)} tensors")
    return lines


def _save(tensors: dict[str, np.ndarray], out: Path) -> None:
    from safetensors.numpy import save_file

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(out))
    except OSError as err:
        raise DslcError(f"cannot write {out}: {err.strerror or err}") from None
