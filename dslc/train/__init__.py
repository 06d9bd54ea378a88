"""`dslc train`: the training runtime for compiled specs.

contract.py    what the generated module provides (INPUTS, create_loss, ...), read once
formats.py     data files to arrays: .npz, .csv, MNIST IDX, text
data.py        arrays checked against the spec (shapes, dtypes), splits, tensors
loop.py        the seeded, resumable training loop
checkpoint.py  atomic checkpoints: safetensors weights, a weights-only trainer state
report.py      progress bars, metrics.jsonl, curves.png
distributed.py DistributedDataParallel under torchrun
export.py      ONNX from the trained weights, with a parity check
run.py         the command: options in, a run directory out
"""

from dslc.train.run import Options, train

__all__ = ["Options", "train"]
