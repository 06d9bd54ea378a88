"""What a PyTorch user does to get an ONNX file from the module dslc generates: import the
generated model.py, build the model, call torch.onnx.export. bench/onnx_gpt.py times this
script as a whole process against `dslc compile --target onnx`.

    python bench/export_generated.py model.py out.onnx --opset 20 --tokens 1,128 [--dynamo]

The exporter is the TorchScript one (dynamo=False) unless --dynamo, on the module in eval mode
with constant folding, batch and sequence axes dynamic. The dynamo exporter needs onnxscript,
which is not a dependency of dslc: bench/generate_gpt.py runs this script with --dynamo in a
separate environment that has it (its --dynamo-python)."""

from __future__ import annotations

import argparse
import importlib.util
import warnings

import torch


def export(
    model: torch.nn.Module, shape: tuple[int, int], path: str, opset: int, dynamo: bool = False
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(
            model.eval(),
            (torch.zeros(*shape, dtype=torch.int64),),
            path,
            dynamo=dynamo,
            opset_version=opset,
            do_constant_folding=True,
            input_names=["tokens"],
            output_names=["logits"],
            dynamic_axes={"tokens": {0: "N", 1: "T"}, "logits": {0: "N", 1: "T"}},
        )


def generated_module(path: str):
    """The model.py that dslc wrote, imported."""
    spec = importlib.util.spec_from_file_location("generated", path)
    assert spec and spec.loader
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    return generated


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("module")
    p.add_argument("out")
    p.add_argument("--opset", type=int, default=20)
    p.add_argument("--tokens", default="1,128", help="the example input's shape")
    p.add_argument("--dynamo", action="store_true", help="torch.onnx.export(dynamo=True)")
    args = p.parse_args()
    generated = generated_module(args.module)
    torch.manual_seed(0)
    batch, length = (int(d) for d in args.tokens.split(","))
    export(generated.create_model(), (batch, length), args.out, args.opset, args.dynamo)


if __name__ == "__main__":
    main()
