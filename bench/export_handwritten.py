"""What a PyTorch user does to get an ONNX file: build the hand-written network and call
torch.onnx.export. bench/onnx_cnn.py times this script as a whole process against
`dslc compile`, and uses `export` for the graphs whose nodes it counts.

    python bench/export_handwritten.py resnet50 224 1000 out.onnx

The exporter is the TorchScript one (dynamo=False; the dynamo exporter needs onnxscript), at
dslc's opset 21, on the module in eval mode with constant folding: in eval mode that exporter
folds batch norm into the preceding convolution, as dslc does."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from handwritten import create  # noqa: E402

OPSET = 21


def export(model: torch.nn.Module, input_shape: tuple[int, ...], path: Path | str) -> None:
    """Export `model` (put in eval mode) with a dynamic batch dimension."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices
        torch.onnx.export(
            model.eval(),
            (torch.randn(*input_shape),),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
        )


def main(argv: list[str]) -> None:
    name, size, classes, out = argv[0], int(argv[1]), int(argv[2]), argv[3]
    torch.manual_seed(0)
    model = create(name, size, classes)
    channels = 1 if name == "lenet5" else 3
    export(model, (1, channels, size, size), out)


if __name__ == "__main__":
    main(sys.argv[1:])
