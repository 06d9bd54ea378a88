"""The `dslc` command line's arguments: every command, its flags with their checks, and the
examples its --help shows. dslc/cli.py runs what they ask for."""

from __future__ import annotations

import argparse
import sys

from dslc.errors import DslcError
from dslc.version import __version__


def default_onnx_name(model: str) -> str:
    """`dslc compile --target onnx` without -o: the model's name, lowercased, in the current
    directory (LeNet5 -> lenet5.onnx)."""
    return f"{model.lower()}.onnx"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"dslc: error: {message}", file=sys.stderr)
        raise SystemExit(1)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got '{text}'")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return int(text)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got '{text}'")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got '{text}'")
    return value


# Examples shown at the end of each command's --help (and of `dslc --help`).
EXAMPLES = {
    "dslc": """examples:
  dslc check specs/lenet5.dl
  dslc compile specs/lenet5.dl --target onnx -o lenet5.onnx
  dslc COMMAND --help          each command's options, with examples""",
    "check": """examples:
  dslc check specs/lenet5.dl                     ok: model LeNet5, 61,706 parameters
  dslc check specs/small_resnet.dl --param width=32
  cat specs/lenet5.dl | dslc check -             the spec from standard input""",
    "summary": """examples:
  dslc summary specs/resnet50.dl
  dslc summary specs/small_resnet.dl --param width=8""",
    "compile": """examples:
  dslc compile specs/lenet5.dl -o lenet5.py               PyTorch source (default target)
  dslc compile specs/lenet5.dl --target onnx              writes lenet5.onnx
  dslc compile specs/lenet5.dl --target onnx -o m.onnx --weights weights.pt
  dslc compile specs/lenet5.dl --target onnx -o - | gzip > m.onnx.gz
  dslc compile specs/lenet5.dl --target ir                the typed IR, on standard output
  dslc compile specs/vae.dl --target onnx --part decoder1 --weights vae.pt""",
    "verify": """examples:
  dslc verify specs/lenet5.dl
  dslc verify specs/lenet5.dl --batch-sizes 1,8 --atol 1e-4 --out build/lenet5""",
    "train": """examples:
  dslc train specs/digits_cnn.dl --data build/digits/train.npz --val build/digits/val.npz \\
      --out runs/digits --export-onnx
  dslc train specs/tiny_gpt.dl --data build/docs.txt --out runs/tiny --epochs 10
  dslc train specs/digits_cnn.dl --data train.npz --out runs/digits --resume""",
    "eval": """examples:
  dslc eval specs/digits_cnn.dl --weights runs/digits/best.safetensors --data test.npz
  dslc eval specs/digits_cnn.dl --weights W --data test.npz --confusion build/confusion.png""",
    "generate": """examples:
  dslc generate --onnx runs/tiny/model.onnx --prompt "The model" --temperature 0.8 --top-k 20
  dslc generate specs/tiny_gpt.dl --weights runs/tiny/best.safetensors --prompt 'The'""",
    "weights": """examples:
  dslc weights map specs/resnet18.dl my_resnet.pt -o mapped.safetensors
  dslc train specs/resnet18.dl --data train.npz --out runs/ft --init-from mapped.safetensors \\
      --allow-missing 'fc.*'""",
    "run": """examples:
  dslc run lenet5.onnx --input x=x.npy
  dslc run lenet5.onnx --input x=x.npy --provider cuda -o out.npz
  dslc run runs/shapes/model.onnx --input x=images.npy --top-k 3""",
}


def _command(sub, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=help[:1].upper() + help[1:] + ".",
        epilog=EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="dslc",
        description="Compile .dl deep-learning specs to PyTorch and ONNX.",
        epilog=EXAMPLES["dslc"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"dslc {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def spec_command(name: str, help: str):
        c = _command(sub, name, help)
        c.add_argument("spec", help="the .dl file, or - to read it from standard input")
        c.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="set a model parameter",
        )
        return c

    spec_command("check", "parse and check a spec; print its parameter count")
    spec_command("summary", "print every layer with its output shape, parameters and MACs")
    c = spec_command("compile", "compile a spec to PyTorch source, an ONNX model, or IR text")
    c.add_argument("--target", choices=("torch", "onnx", "ir"), default="torch")
    c.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="output file, or - for standard output (default: torch and ir to standard output; "
        f"onnx to the model's name lowercased, in the current directory: "
        f"{default_onnx_name('LeNet5')} for model LeNet5)",
    )
    c.add_argument(
        "--weights", help="ONNX: a state_dict (.pt) or .safetensors file of the generated module"
    )
    c.add_argument(
        "--seed", type=_non_negative, default=0, help="ONNX without --weights: initializer seed"
    )
    c.add_argument("--show", action="store_true", help="ONNX: also print the graph as text")
    c.add_argument(
        "--part",
        metavar="INSTANCE",
        help="compile one block instance (e.g. decoder1) as a model of its own; --weights may "
        "be the full model's",
    )
    c.add_argument(
        "--no-fold",
        action="store_true",
        help="ONNX: keep batch norm as its own node instead of folding it into the layer before",
    )
    c.add_argument(
        "--decompose",
        action="store_true",
        help="ONNX: write attention, layer/RMS norm and GELU as basic ops (MatMul, Softmax, "
        "ReduceMean, ...) instead of the fused ops of opsets 17-23, for runtimes without them",
    )
    _quantize_arguments(c)
    c.add_argument(
        "--kv-cache",
        action="store_true",
        help="ONNX: a decoder with past keys and values in and present ones out, for every "
        "causal attention layer (prefill and one-token decode steps)",
    )
    v = spec_command("verify", "check the PyTorch module and the ONNX graph agree on random inputs")
    v.add_argument("--batch-sizes", default="1,3,7")
    v.add_argument("--atol", type=_tolerance, default=None, help="default 1e-5 (1e-2 for f16)")
    v.add_argument("--seed", type=_non_negative, default=0)
    v.add_argument("--out", help="keep model.py, weights.pt and model.onnx in this directory")
    v.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    _train_parser(spec_command("train", "train a spec's model on data files; see docs/training.md"))
    _eval_parser(spec_command("eval", "the loss and metrics of trained weights on a data set"))
    _generate_parser(_command(sub, "generate", "text from a trained language model"))
    _weights_parser(_command(sub, "weights", "tools for weights files"))
    r = _command(sub, "run", "run an ONNX model in onnxruntime")
    r.add_argument("model")
    r.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    r.add_argument("--provider", default="cpu", help="cpu or cuda")
    r.add_argument("-o", "--output", help="save the outputs to this .npz file")
    r.add_argument(
        "--top-k",
        type=_positive,
        metavar="K",
        help="print each example's K likeliest classes, named from the model's metadata",
    )
    return p


QUANTIZE_MODES = ("int8", "int8-dynamic", "int8-static", "fp16")  # runtime/quantize.choose


QUANTIZE_FLAGS = ("quantize", "calibrate", "validate", "max_drop", "force")


def check_quantize_flags(args: argparse.Namespace) -> None:
    """The quantization flags belong to --target onnx, and their data to --quantize."""
    given = [f for f in QUANTIZE_FLAGS if getattr(args, f, None) not in (None, False)]
    if given and args.target != "onnx":
        raise DslcError(
            f"--{given[0].replace('_', '-')} quantizes an ONNX model, not --target {args.target}",
            hint="add --target onnx",
        )
    if not args.quantize and given:
        raise DslcError(
            f"--{given[0].replace('_', '-')} is for a quantized model, and --quantize is not given",
            hint="add --quantize int8 (or fp16)",
        )


def _quantize_arguments(c: argparse.ArgumentParser) -> None:
    q = c.add_argument_group("quantization (onnxruntime's tools; docs/quantization.md)")
    q.add_argument(
        "--quantize",
        choices=QUANTIZE_MODES,
        help="ONNX: int8 (dynamic for linear/attention models, static QDQ per channel for "
        "convolutional ones; -dynamic/-static force it) or fp16 (float32 inputs and outputs)",
    )
    q.add_argument("--calibrate", metavar="DATA", help="static int8: inputs to calibrate on")
    q.add_argument(
        "--validate",
        metavar="DATA",
        help="inputs and targets: compare the spec's metric, float against quantized",
    )
    q.add_argument(
        "--max-drop",
        type=float,
        help="--validate: the largest drop allowed (points of accuracy, default 1; or percent "
        "of the loss, default 2)",
    )
    q.add_argument("--force", action="store_true", help="write the model even if it fails")


def _train_parser(t: argparse.ArgumentParser) -> None:
    t.add_argument(
        "--data",
        required=True,
        help=".npz, .csv, .txt, IDX files (a:b, a directory), or an image folder (one "
        "subfolder per class)",
    )
    val = t.add_mutually_exclusive_group()
    val.add_argument("--val", help="validation data, in the same formats")
    val.add_argument(
        "--val-split",
        type=_fraction,
        help="hold out this fraction of --data (default 0.1; 0: none)",
    )
    t.add_argument("--out", required=True, help="the run directory, e.g. runs/NAME")
    t.add_argument("--epochs", type=_positive, help="override the spec's epochs")
    t.add_argument("--batch-size", type=_positive, help="override the spec's batch_size")
    t.add_argument("--seed", type=_non_negative, default=0)
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument(
        "--init-from",
        metavar="WEIGHTS",
        help="start from these weights (.safetensors or a state_dict; default: the spec's "
        "init_from)",
    )
    t.add_argument(
        "--allow-missing",
        action="append",
        default=[],
        metavar="PATTERN",
        help="keys (globs) that --init-from may lack or give another shape: a replaced head",
    )
    t.add_argument(
        "--force-resume",
        action="store_true",
        help="--resume even with another spec, --param values or data than the run's",
    )
    t.add_argument(
        "--accumulate",
        type=_positive,
        default=1,
        metavar="K",
        help="add up the gradients of K batches per optimizer step (a K times larger batch)",
    )
    t.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="mixed precision: bf16 autocast, fp16 autocast with loss scaling (slow on CPU)",
    )
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    t.add_argument(
        "--export-onnx", action="store_true", help="write model.onnx from the best weights"
    )
    t.add_argument(
        "--quantize",
        choices=QUANTIZE_MODES,
        help="with --export-onnx: also model.MODE.onnx, calibrated on the training data and "
        "gated on the validation data (docs/quantization.md)",
    )
    t.add_argument(
        "--bake-normalize",
        action="store_true",
        help="with --export-onnx: move the preprocess normalize into the model, which then "
        "takes raw pixels (float32, 0..255)",
    )
    t.add_argument(
        "--workers",
        type=_non_negative,
        default=2,
        help="image folders: processes decoding images ahead of training (0: in the loop)",
    )
    t.add_argument(
        "--checkpoint-every", type=_positive, metavar="N", help="also checkpoint every N steps"
    )
    t.add_argument(
        "--columns",
        action="append",
        default=[],
        metavar="NAME=COL,COL",
        help="CSV columns of an array",
    )
    t.add_argument(
        "--tokenizer",
        choices=("bytes", "bpe"),
        help="language models on .txt: UTF-8 bytes, or BPE trained on the text "
        "(default: the spec's tokenizer setting)",
    )


def _weights_parser(w: argparse.ArgumentParser) -> None:
    actions = w.add_subparsers(dest="action", required=True, parser_class=_Parser)
    m = actions.add_parser(
        "map",
        help="rename a checkpoint of another layout to the spec's keys, by module order and shape",
        description="Rename the tensors of a checkpoint in another layout to the spec's "
        "state_dict keys, matching them by module order and shape; prints the mapping and "
        "refuses ambiguities.",
    )
    m.add_argument("spec", help="the .dl file")
    m.add_argument("weights", help="a .safetensors file or a torch state_dict")
    m.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the .safetensors to write"
    )
    m.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")


def _eval_parser(e: argparse.ArgumentParser) -> None:
    e.add_argument("--weights", required=True, help="e.g. runs/NAME/best.safetensors")
    e.add_argument("--data", required=True, help="the test data, in dslc train's formats")
    e.add_argument("--batch-size", type=_positive, help="default: the spec's batch_size")
    e.add_argument(
        "--confusion",
        metavar="FILE.png",
        help="classifiers: the confusion matrix's file (default: confusion.png beside --weights)",
    )
    e.add_argument(
        "--columns", action="append", default=[], metavar="NAME=COL,COL", help="CSV columns"
    )
    e.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")


def _generate_parser(g: argparse.ArgumentParser) -> None:
    g.add_argument("spec", nargs="?", help="the .dl file (with --weights)")
    g.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    g.add_argument("--weights", help="the trained weights, e.g. runs/NAME/best.safetensors")
    g.add_argument("--onnx", help="or the exported model, e.g. runs/NAME/model.onnx")
    g.add_argument("--prompt", default="", help="the text to continue (default: a new line)")
    g.add_argument("--max-new-tokens", type=_non_negative, default=200)
    g.add_argument(
        "--temperature", type=_tolerance, default=1.0, help="0: always the likeliest token"
    )
    g.add_argument("--top-k", type=_non_negative, default=0, help="sample from the K likeliest")
    g.add_argument("--seed", type=_non_negative, default=0)
    g.add_argument("--tokenizer", help="default: tokenizer.json beside the weights or model")
    g.add_argument("--context", type=_positive, help="tokens the model sees (default: its own)")
    g.add_argument(
        "--no-kv-cache",
        action="store_true",
        help="run the whole window for every token, not the model's cache of keys and values",
    )
