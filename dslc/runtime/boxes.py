"""`dslc run` on a detector: each image's detections, best first, as lines a person reads
(label, score, box), from the outputs that the model's metadata names (dslc.detections,
which the ONNX backend writes for a model whose outputs come from the detections op), the
labels named from dslc.labels where the model has them."""

from __future__ import annotations

import numpy as np

from dslc.errors import DslcError

KEY = "dslc.detections"  # as dslc.backends.onnx.model.DETECTIONS_KEY, which needs no onnx here


def outputs_of(model_path: str) -> dict[str, str] | None:
    """{"boxes": output name, "scores": ..., "labels": ..., "images": ...}, or None."""
    from dslc.runtime.run import MISSING, metadata_json

    found = metadata_json(model_path, KEY)
    if found is MISSING:
        return None
    if not isinstance(found, dict) or set(found) != {"boxes", "scores", "labels", "images"}:
        raise DslcError(f"{model_path}: metadata {KEY} does not name the four detection outputs")
    return found


def report(
    outputs: dict[str, np.ndarray], names: dict[str, str], images: int, labels=None, most=10
) -> str:
    """Per image, its detections count and the `most` best: `label score [x1, y1, x2, y2]`."""
    boxes, scores = outputs[names["boxes"]], outputs[names["scores"]]
    classes, of = outputs[names["labels"]], outputs[names["images"]]
    lines = []
    for i in range(images):
        rows = np.nonzero(of == i)[0]
        lines.append(f"image {i}: {len(rows)} detection{'s' if len(rows) != 1 else ''}")
        for r in rows[:most]:
            c = int(classes[r])
            label = labels[c] if labels is not None and 0 <= c < len(labels) else str(c)
            box = ", ".join(f"{v:.1f}" for v in boxes[r])
            lines.append(f"  {label} {scores[r]:.3f} [{box}]")
        if len(rows) > most:
            lines.append(f"  ... {len(rows) - most} more")
    return "\n".join(lines)
