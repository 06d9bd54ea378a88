"""`dslc train --export-onnx`: the ONNX model of the best weights, checked against the PyTorch
module (eval mode) on a batch of validation data."""

from __future__ import annotations

from pathlib import Path

from dslc.api import Spec
from dslc.train import report
from dslc.train.checkpoint import atomic_write
from dslc.train.contract import Contract
from dslc.train.data import Dataset


def export_onnx(spec: Spec, c: Contract, out: Path, val: Dataset, batch: int) -> int:
    """Write out/model.onnx; 0 when it agrees with PyTorch within dslc verify's tolerance."""
    from dslc.verify import default_atol

    weights = out / "best.safetensors"
    if not weights.exists():  # no epoch improved on the monitored metric (NaN losses)
        weights = out / "last.safetensors"
    model = spec.onnx_model(weights=weights)
    path = out / "model.onnx"
    atomic_write(path, lambda tmp: tmp.write_bytes(model.SerializeToString()))
    diff, n = parity(c, weights, path, val, batch)
    atol = default_atol(spec)
    verdict = "agree" if diff <= atol else "DISAGREE"
    report.say(
        f"wrote {path} from {weights.name}: max |torch - onnxruntime| = {diff:.2e} on {n} "
        f"validation examples ({verdict}, tolerance {atol:g})"
    )
    return 0 if diff <= atol else 1


def parity(c: Contract, weights: Path, onnx_path: Path, val: Dataset, batch: int) -> tuple:
    """The largest output difference between the PyTorch module and onnxruntime, and the
    number of examples compared."""
    import torch
    from safetensors.torch import load_file

    from dslc.runner import run_model
    from dslc.verify import max_abs_diff

    module = c.create_model()
    module.load_state_dict(load_file(str(weights)))
    module.eval()
    examples = val.take(slice(0, batch))
    inputs = [examples[k] for k in c.inputs]
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got, _ = run_model(
        str(onnx_path), {k: t.numpy() for k, t in zip(c.inputs, inputs, strict=True)}, "cpu"
    )
    diffs = [
        max_abs_diff(e.float().numpy(), got[name])
        for name, e in zip(c.outputs, expected, strict=True)
    ]
    return max(diffs), len(inputs[0])
