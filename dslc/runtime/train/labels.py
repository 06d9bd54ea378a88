"""Class names: the subfolders of an image folder, or the strings of a CSV label column. A run
keeps them in labels.json; --export-onnx writes them into the model's metadata_props (KEY), so
that `dslc run --top-k K` names the classes it prints without the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dslc.errors import DslcError

FILE = "labels.json"
KEY = "dslc.labels"  # read by dslc.runtime.topk


def save(out: Path, classes: list[str]) -> None:
    from dslc.runtime.train.checkpoint import atomic_write

    text = json.dumps({"classes": classes}, indent=2, ensure_ascii=False) + "\n"
    atomic_write(out / FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def encode(
    path: Path, column: str, values: list[str], rows: list[int], known: list[str] | None
) -> tuple[np.ndarray, list[str]]:
    """A column of class names as class indices (names sorted, class i the i-th), and the
    names; `known`: the training data's names, which a validation file's must be among."""
    classes = known if known is not None else sorted(set(values))
    index = {name: i for i, name in enumerate(classes)}
    for value, row in zip(values, rows, strict=True):
        if value not in index:
            where = f"{path}:{row}: column '{column}'"
            if value == "":
                raise DslcError(f"{where} is empty", hint="every row needs a label")
            raise DslcError(
                f"{where} holds class '{value}', which the training data does not have",
                hint=f"the classes are {', '.join(classes)}",
            )
    return np.array([index[v] for v in values], np.int64), list(classes)
