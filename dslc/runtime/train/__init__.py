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
text.py        text for language models: tokens, windows, the held-out end
tokenizer.py   bytes and BPE tokenizers, tokenizer.json
experiment.py  experiment.json: what a run is; --resume refuses another experiment
precision.py   --precision: bf16 / fp16 autocast, the fp16 grad scaler
metrics.py     validation metrics (accuracy, top-5, macro F1, MAE/RMSE, per-output losses)
evaluate.py    dslc eval: metrics of trained weights on a data set, the confusion matrix
board.py       TensorBoard event files, when the tensorboard package is installed
images.py      image folders: scanned up front, decoded lazily by DataLoader workers
labels.py      class names (folders, CSV names): labels.json, the ONNX metadata key
bake.py        --bake-normalize: the preprocess normalize moved into the ONNX graph
objects.py     per-object targets (detection): checks, and the objects of any list of images
coco.py        COCO-style JSON annotations: images, boxes, categories as labels 1..C
annotated.py   COCO-style data sets: images and their boxes through preprocess/augment
mean_ap.py     detectors' mAP by pycocotools; detections.png

`Options` and `train` are imported on first use: the runtime needs torch, but the tokenizers
and text readers do not, and `dslc generate --onnx` uses them without it.
"""

from typing import Any

__all__ = ["Options", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dslc.runtime.train import run

        return getattr(run, name)
    raise AttributeError(f"module 'dslc.runtime.train' has no attribute {name!r}")
