"""What a PyTorch user does to get an ONNX detector from the module dslc generates: import the
generated model.py, build the model, load its weights, call torch.onnx.export on an example
batch. bench/detection.py runs this script as a whole process (its time is the export's) and
reads what happened from the one JSON line it prints.

    python bench/export_detection.py model.py weights.pt images.npy out.onnx [--dynamo]

The exporter is the TorchScript one (dynamo=False) unless --dynamo, on the module in eval mode
with constant folding, opset 20 (its highest), the batch and the detections' count dynamic.
The TorchScript exporter traces: a Python `if` or loop on a tensor's value runs once, on the
example batch, and the graph keeps that run's branch and trip count; the tracer says so with a
TracerWarning each time, which this script counts. Exit status 0 when a file was written."""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch
from export_generated import generated_module

SERVED = ["boxes", "scores", "labels", "images"]


def shorten(error: BaseException) -> str:
    """The error's first line, without the exporter's request to file an issue."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text.split(" Please feel free to request support")[0]
    return f"{type(error).__name__}: {text[:240]}"


def export(model: torch.nn.Module, images: torch.Tensor, path: str, dynamo: bool) -> dict:
    """Export `model` traced on `images`; what happened, as a dict."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.onnx.export(
                model.eval(),
                (images,),
                path,
                dynamo=dynamo,
                opset_version=20,
                do_constant_folding=True,
                input_names=["image"],
                output_names=SERVED,
                dynamic_axes={"image": {0: "N"}} | {name: {0: "K"} for name in SERVED},
            )
            error = None
        except Exception as e:  # the outcome is the benchmark's result, whatever it is
            error = shorten(e)
    tracer = sum(issubclass(w.category, torch.jit.TracerWarning) for w in caught)
    return {
        "exported": error is None,
        "error": error,
        "tracer_warnings": tracer,
        "export_s": time.perf_counter() - start,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("module")
    p.add_argument("weights")
    p.add_argument("images", help=".npy: the example batch the export traces")
    p.add_argument("out")
    p.add_argument("--dynamo", action="store_true", help="torch.onnx.export(dynamo=True)")
    args = p.parse_args()
    generated = generated_module(args.module)
    model = generated.create_model()
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    images = torch.from_numpy(np.load(args.images))
    with torch.no_grad():
        result = export(model, images, args.out, args.dynamo)
    print(json.dumps(result))
    raise SystemExit(0 if result["exported"] else 1)


if __name__ == "__main__":
    main()
