"""`dslc verify`: compile a spec to both backends and show they agree. The PyTorch module
(eval mode, seeded) and the ONNX graph built from its state_dict run on the same random
inputs in onnxruntime, at several batch sizes, and for a recurrent model at several sequence
lengths."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dslc.api import Spec
from dslc.errors import DslcError
from dslc.ir.graph import Graph, Value
from dslc.ir.types import Dim, Sym, numpy_dtype

OTHER_DIMS = 32  # the size of the symbolic dims other than the batch
# ... in a graph that steps through time: one step, a few, and many.
SEQUENCE_LENGTHS = (1, 7, 64)


@dataclass
class Check:
    batch: int
    max_abs_diff: dict[str, float]
    length: int = OTHER_DIMS  # the other symbolic dims (a sequence's length)


def lengths_for(graph: Graph) -> tuple[int, ...]:
    """The sizes parity gives the symbolic dims other than the batch: SEQUENCE_LENGTHS where an
    op steps through time (OpDef.steps_in_time), since a recurrence right for one length may
    be wrong at another; OTHER_DIMS otherwise."""
    return SEQUENCE_LENGTHS if any(n.op.steps_in_time for n in graph.nodes) else (OTHER_DIMS,)


def max_abs_diff(expected: np.ndarray, got: np.ndarray) -> float:
    """The largest |expected - got|; NaN in both places agrees, NaN in one is infinitely far, and
    so is a different shape (a detector that keeps another number of boxes)."""
    if np.shape(expected) != np.shape(got):
        return float("inf")
    e, g = expected.astype(np.float64), got.astype(np.float64)
    same = (e == g) | (np.isnan(e) & np.isnan(g))  # equal infinities and NaNs agree
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(e - g))
    return float(np.max(np.nan_to_num(diff, nan=np.inf, posinf=np.inf), initial=0.0))


def default_atol(spec: Spec) -> float:
    """1e-5 for f32 and f64 outputs; f16 carries about three decimal digits."""
    return 1e-2 if any(v.type.dtype == "f16" for v in spec.graph.outputs.values()) else 1e-5


def roi_inputs(graph: Graph) -> dict[str, tuple[float, float]]:
    """Model inputs that an op reads as regions of interest (OpDef.rois_input) -> the
    (height, width) of the images they lie in (OpDef.roi_image), where it is known."""
    inputs = {id(v): v.name for v in graph.inputs}
    found: dict[str, tuple[float, float]] = {}
    for n in graph.nodes:
        if n.op.rois_input is not None and id(n.inputs[n.op.rois_input]) in inputs:
            image = n.op.roi_image(n)
            if image is not None:
                found.setdefault(inputs[id(n.inputs[n.op.rois_input])], image)
    return found


def random_rois(
    rows: int, batch: int, image: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """(rows, 5) RoIs (image index, x1, y1, x2, y2): an index in [0, batch), and a box inside
    the image whose sides are drawn log-uniformly from 1/32 of the image to all of it, so
    that small and large ones (every level of a feature pyramid) are drawn."""
    height, width = image
    sides = np.exp(rng.uniform(np.log(1 / 32), 0.0, (rows, 2))) * (width, height)
    corner = rng.uniform(0.0, 1.0, (rows, 2)) * ((width, height) - sides)
    index = rng.integers(0, batch, (rows, 1))
    return np.concatenate([index, corner, corner + sides], axis=1)


def random_inputs(
    values: list[Value],
    batch: int,
    rng: np.random.Generator,
    other_dims: int = OTHER_DIMS,
    tokens: dict[str, int] | None = None,
    sizes: dict[str, int] | None = None,
    rois: dict[str, tuple[float, float]] | None = None,
) -> dict[str, np.ndarray]:
    """Random arrays for the model inputs: a symbolic dim that leads some input is the batch
    wherever it stands (an RNN's initial state (layers, N, hidden) too), other symbolic dims
    are their size in `sizes` (by name: {"T": 7, "S": 64}) or else `other_dims`; floats are
    standard normal, integers 0 or 1, or any token id for inputs named in `tokens` (name ->
    vocabulary size, Graph.token_inputs). Inputs named in `rois` (name -> image size,
    roi_inputs) are random_rois, as many as their leading dim, which is not the batch."""
    rois = rois or {}
    leading = {v.type.shape[0] for v in values if v.type.shape and v.name not in rois}
    batch_dims = {d for d in leading if isinstance(d, Sym)}
    given = sizes or {}

    def size(i: int, d: Dim, first_is_batch: bool) -> int:
        if isinstance(d, int):
            return d
        return (
            batch
            if (i == 0 and first_is_batch) or d in batch_dims
            else given.get(str(d), other_dims)
        )

    arrays = {}
    for v in values:
        shape = [size(i, d, v.name not in rois) for i, d in enumerate(v.type.shape)]
        data: np.ndarray
        if v.name in rois:
            data = random_rois(shape[0], batch, rois[v.name], rng)
        elif v.type.dtype.startswith(("f", "bf")):
            data = rng.standard_normal(shape)
        else:
            data = rng.integers(0, (tokens or {}).get(v.name, 2), shape)
        arrays[v.name] = np.asarray(data, dtype=numpy_dtype(v.type.dtype))
    return arrays


def verify(
    spec: Spec,
    batches: tuple[int, ...] = (1, 3, 7),
    seed: int = 0,
    out: Path | None = None,
    provider: str = "cpu",
    lengths: tuple[int, ...] | None = None,
) -> list[Check]:
    """Checks at every batch size and sequence length (by default lengths_for the graph)."""
    import torch

    from dslc.runtime.run import run_model

    torch.manual_seed(seed)
    model = spec.torch_module().eval()
    out = out or Path(tempfile.mkdtemp(prefix="dslc-verify-"))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DslcError(f"cannot create {out}: {err.strerror}") from None
    (out / "model.py").write_text(spec.torch_source())
    torch.save(model.state_dict(), out / "weights.pt")
    onnx_path = out / "model.onnx"
    onnx_path.write_bytes(spec.onnx_model(weights=out / "weights.pt").SerializeToString())
    rng = np.random.default_rng(seed)
    checks = []
    for batch, length in [(b, t) for b in batches for t in lengths or lengths_for(spec.graph)]:
        inputs = random_inputs(
            spec.graph.inputs,
            batch,
            rng,
            length,
            tokens=spec.graph.token_inputs(),
            rois=roi_inputs(spec.graph),
        )
        try:
            with torch.no_grad():
                expected = model(*(torch.from_numpy(a) for a in inputs.values()))
        except RuntimeError as err:
            sizes = ", ".join(f"{k}{list(a.shape)}" for k, a in inputs.items())
            raise DslcError(
                f"the PyTorch module failed on random inputs {sizes}: {err}",
                hint=f"symbolic dims other than the batch are set to {length} here",
            ) from None
        expected = expected if isinstance(expected, tuple) else (expected,)
        got, _ = run_model(str(onnx_path), inputs, provider)
        diffs = {
            name: max_abs_diff(e.detach().numpy(), got[name])  # an output may be a parameter
            for name, e in zip(spec.graph.outputs, expected, strict=True)
            if name in spec.graph.served
        }
        checks.append(Check(batch, diffs, length))
    return checks
