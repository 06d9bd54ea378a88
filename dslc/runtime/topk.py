"""`dslc run MODEL --top-k K`: each example's K likeliest classes with their probabilities,
named by the class names that `dslc train --export-onnx` writes into the model's metadata
(dslc.labels, a JSON list); models without them print class numbers."""

from __future__ import annotations

import numpy as np

from dslc.errors import DslcError

KEY = "dslc.labels"  # as dslc.runtime.train.labels.KEY, which needs no onnxruntime


def class_names(model_path: str) -> list[str] | None:
    from dslc.runtime.run import MISSING, metadata_json

    names = metadata_json(model_path, KEY)
    if names is MISSING:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DslcError(f"{model_path}: metadata {KEY} is not a JSON list of class names")
    return names


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows that already are probabilities as they are; logits through a softmax (float64)."""
    x = scores.astype(np.float64)
    if np.all(x >= 0) and np.allclose(x.sum(axis=1), 1.0, atol=1e-4):
        return x
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def report(model_path: str, outputs: dict[str, np.ndarray], k: int) -> str:
    names = class_names(model_path)
    scored = {n: a for n, a in outputs.items() if np.ndim(a) == 2 and a.dtype.kind == "f"}
    if not scored:
        raise DslcError(
            "--top-k: the model has no output of scores per class, shape (N, classes)",
            hint="outputs: " + ", ".join(f"{n} {tuple(np.shape(a))}" for n, a in outputs.items()),
        )
    lines = []
    for output, scores in scored.items():
        classes = scores.shape[1]
        labels = names if names is not None and len(names) == classes else None
        lines.append(f"{output}: top {min(k, classes)} of {classes} classes")
        for i, row in enumerate(probabilities(scores)):
            best = np.argsort(-row, kind="stable")[:k]
            text = ", ".join(f"{labels[j] if labels else j} {row[j]:.4f}" for j in best)
            lines.append(f"  {i}: {text}")
    return "\n".join(lines)
