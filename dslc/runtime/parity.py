"""`dslc verify`: compile a spec to both backends and show they agree. The PyTorch module
(eval mode, seeded) and the ONNX graph built from its state_dict run on the same random
inputs in onnxruntime, at several batch sizes."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dslc.api import Spec
from dslc.errors import DslcError
from dslc.ir.graph import Value
from dslc.ir.types import numpy_dtype


@dataclass
class Check:
    batch: int
    max_abs_diff: dict[str, float]


def max_abs_diff(expected: np.ndarray, got: np.ndarray) -> float:
    """The largest |expected - got|; NaN in both places agrees, NaN in one is infinitely far."""
    e, g = expected.astype(np.float64), got.astype(np.float64)
    same = (e == g) | (np.isnan(e) & np.isnan(g))  # equal infinities and NaNs agree
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(e - g))
    return float(np.max(np.nan_to_num(diff, nan=np.inf, posinf=np.inf), initial=0.0))


def default_atol(spec: Spec) -> float:
    """1e-5 for f32 and f64 outputs; f16 carries about three decimal digits."""
    return 1e-2 if any(v.type.dtype == "f16" for v in spec.graph.outputs.values()) else 1e-5


def random_inputs(
    values: list[Value],
    batch: int,
    rng: np.random.Generator,
    other_dims: int = 32,
    tokens: dict[str, int] | None = None,
    sizes: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Random arrays for the model inputs: the leading symbolic dim is the batch, other symbolic
    dims are their size in `sizes` (by name: {"T": 7, "S": 64}) or else `other_dims`; floats
    are standard normal, integers 0 or 1, or any token id for inputs named in `tokens` (name ->
    vocabulary size, Graph.token_inputs)."""
    arrays = {}
    for v in values:
        shape = [
            d if isinstance(d, int) else batch if i == 0 else (sizes or {}).get(str(d), other_dims)
            for i, d in enumerate(v.type.shape)
        ]
        data: np.ndarray
        if v.type.dtype.startswith(("f", "bf")):
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
) -> list[Check]:
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
    for batch in batches:
        inputs = random_inputs(spec.graph.inputs, batch, rng, tokens=spec.graph.token_inputs())
        try:
            with torch.no_grad():
                expected = model(*(torch.from_numpy(a) for a in inputs.values()))
        except RuntimeError as err:
            sizes = ", ".join(f"{k}{list(a.shape)}" for k, a in inputs.items())
            raise DslcError(
                f"the PyTorch module failed on random inputs {sizes}: {err}",
                hint="symbolic dims other than the batch are set to 32 here",
            ) from None
        expected = expected if isinstance(expected, tuple) else (expected,)
        got, _ = run_model(str(onnx_path), inputs, provider)
        diffs = {
            name: max_abs_diff(e.detach().numpy(), got[name])  # an output may be a parameter
            for name, e in zip(spec.graph.outputs, expected, strict=True)
        }
        checks.append(Check(batch, diffs))
    return checks
