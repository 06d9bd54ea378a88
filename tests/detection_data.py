"""The detection data the tests draw themselves: examples/detection/make_data.py (images of one
to three shapes, the shape the class, with their boxes, as .npz and as COCO-style folders),
imported from its path, so the example and the tests use one maker."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "detection_make_data", ROOT / "examples/detection/make_data.py"
)
assert _spec is not None and _spec.loader is not None
maker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(maker)

CLASSES = maker.CLASSES
draw, make, write_npz, write_coco = maker.draw, maker.make, maker.write_npz, maker.write_coco
