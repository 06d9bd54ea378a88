"""`dslc train --export-onnx`: the ONNX model of the best weights, checked against the PyTorch
module (eval mode) on a batch of validation data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dslc import transforms
from dslc.api import Spec
from dslc.errors import DslcError
from dslc.runtime.train import bake, labels, report
from dslc.runtime.train.checkpoint import atomic_write
from dslc.runtime.train.contract import Contract
from dslc.runtime.train.data import Dataset

CONTEXT_KEY = "dslc.context"


def export_onnx(
    spec: Spec,
    c: Contract,
    out: Path,
    val: Any,
    batch: int,
    context: int | None = None,
    classes: list[str] | None = None,
    bake_normalize: bool = False,
) -> int:
    """Write out/model.onnx; 0 when it agrees with PyTorch within dslc verify's tolerance,
    relative to the outputs' magnitude when above 1: float32 keeps about 7 digits, so trained
    logits of size 10 differ by 1e-5 between two correct runtimes. `context`: a language
    model's tokens per window, kept in the model's metadata_props (CONTEXT_KEY) for
    `dslc generate --onnx`, which has no spec to read it from; `classes`: the class names,
    as JSON under labels.KEY; `bake_normalize`: the preprocess normalize moved into the
    graph (bake.py)."""
    from dslc.runtime.parity import default_atol

    weights = out / "best.safetensors"
    if not weights.exists():  # no epoch improved on the monitored metric (NaN losses)
        weights = out / "last.safetensors"
    model = spec.onnx_model(weights=weights)
    if context is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = CONTEXT_KEY, str(context)
    if classes:
        entry = model.metadata_props.add()
        entry.key, entry.value = labels.KEY, json.dumps(classes, ensure_ascii=False)
    norm = _baked(c) if bake_normalize else None
    if norm is not None:
        bake.bake(model, next(iter(c.inputs)), *norm)
    path = out / "model.onnx"
    atomic_write(path, lambda tmp: tmp.write_bytes(model.SerializeToString()))
    diff, n, scale = parity(c, weights, path, val, batch, norm)
    atol = default_atol(spec)
    ok = diff <= atol * max(1.0, scale)
    scaled = f" times the largest output, {scale:.3g}" if scale > 1 else ""
    report.say(
        f"wrote {path} from {weights.name}: max |torch - onnxruntime| = {diff:.2e} on {n} "
        f"validation examples ({'agree' if ok else 'DISAGREE'}, tolerance {atol:g}){scaled}"
    )
    decoder = cached_decoder(spec, weights, out, context) if context is not None else None
    if decoder is not None:
        report.say(f"wrote {decoder}: the decoder with a key/value cache, for dslc generate --onnx")
    return 0 if ok else 1


DECODER = "decoder.onnx"  # beside model.onnx: the decoder with a key/value cache


def cached_decoder(spec: Spec, weights: Path, out: Path, context: int) -> Path | None:
    """out/decoder.onnx, `dslc compile --kv-cache`'s decoder of the same weights, for a language
    model whose attention a cache serves (None for another: model.onnx recomputes the window),
    with its context in the metadata, for `dslc generate --onnx`."""
    from dslc.diagnostics import CompileError

    try:
        export = spec.onnx_export(weights, kv_cache=True)
    except (CompileError, DslcError):  # no causal attention, or what a cache cannot serve
        return None
    export.skeleton.metadata_props.add(key=CONTEXT_KEY, value=str(context))
    path = out / DECODER
    atomic_write(path, lambda tmp: export.write(tmp))
    return path


def _baked(c: Contract) -> tuple[tuple, tuple]:
    norm = transforms.normalization(c.transforms.get("preprocess", ()))
    if norm is None:
        raise DslcError(
            "--bake-normalize: the spec's preprocess has no normalize step to move into the model",
            hint="end preprocess with normalize(mean=[...], std=[...])",
        )
    return norm


def parity(
    c: Contract, weights: Path, onnx_path: Path, val: Dataset, batch: int, norm: Any = None
) -> tuple:
    """The largest output difference between the PyTorch module and onnxruntime, the number
    of examples compared, and the largest output magnitude; `norm`: onnxruntime gets the raw
    pixels of what the module gets normalized."""
    import torch

    from dslc.runtime.parity import max_abs_diff
    from dslc.runtime.run import run_model
    from dslc.runtime.train.checkpoint import load_weights

    module = c.create_model()
    load_weights(module, weights)
    module.eval()
    examples = val.take(slice(0, batch))
    inputs = [examples[k] for k in c.inputs]
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    feed = {k: t.numpy() for k, t in zip(c.inputs, inputs, strict=True)}
    if norm is not None:
        feed = {k: bake.raw_pixels(v, *norm) for k, v in feed.items()}
    got, _ = run_model(str(onnx_path), feed, "cpu")
    served = {n: e for n, e in zip(c.outputs, expected, strict=True) if n in got}  # no `train
    diffs = [max_abs_diff(e.float().numpy(), got[n]) for n, e in served.items()]  # output`s
    scale = max(float(e.float().abs().max()) if e.numel() else 0.0 for e in served.values())
    return max(diffs), len(inputs[0]), scale
