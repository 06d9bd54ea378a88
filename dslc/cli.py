"""The `dslc` command. Exit codes: 0 success, 1 a user error (in the spec, the arguments or the
files), 2 an internal error, which is a bug in dslc; 141 when the reader of stdout left early.
`-` is standard input as the spec and standard output as `-o`."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dslc.api import Spec, load
from dslc.diagnostics import CompileError
from dslc.errors import DslcError
from dslc.version import __version__


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"dslc: error: {message}", file=sys.stderr)
        raise SystemExit(1)


def _params(items: list[str]) -> dict[str, Any]:
    """--param name=value: model parameters, values as .dl literals (64, 0.5, true, "s")."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise DslcError(f"bad --param '{item}'", hint="write it as NAME=VALUE, e.g. size=64")
        if name in out:
            raise DslcError(f"--param {name} is given twice")
        lowered = {"true": True, "false": False}
        try:
            out[name] = lowered[text] if text in lowered else int(text)
        except ValueError:
            try:
                out[name] = float(text)
            except ValueError:
                out[name] = text.strip('"')
    return out


def _load(args) -> Spec:
    return load(args.spec, _params(args.param))


def cmd_check(args) -> int:
    spec = _load(args)
    print(f"{spec.path}: ok: model {spec.name}, {spec.param_count:,} parameters")
    return 0


def cmd_summary(args) -> int:
    sys.stdout.write(_load(args).summary())
    return 0


def cmd_compile(args) -> int:
    spec = _load(args)
    if args.part:
        spec = spec.part(args.part)
    if args.target == "onnx":
        return _compile_onnx(spec, args)
    text = spec.torch_source() if args.target == "torch" else spec.ir_text()
    if args.output and args.output != STDOUT:
        _write(Path(args.output), lambda path: path.write_bytes(text.encode()))
    else:
        sys.stdout.write(text)
    return 0


STDOUT = "-"  # as -o: write to standard output


def _compile_onnx(spec: Spec, args) -> int:
    from dslc.backends.onnx.model import to_text

    to_stdout = args.output == STDOUT
    if to_stdout and args.show:
        raise DslcError("--show prints the graph to standard output, which -o - already takes")
    if to_stdout and sys.stdout.isatty():
        raise DslcError(
            "an ONNX model is binary: not written to a terminal",
            hint="redirect it: dslc compile SPEC --target onnx -o - > model.onnx",
        )
    export = spec.onnx_export(
        args.weights, args.seed, fold_batch_norm=not args.no_fold, fused=not args.decompose
    )
    out = Path(args.output or default_onnx_name(spec.name))
    if to_stdout:
        _write_stdout(export.write)
    else:
        _write(out, export.write)
    folded = export.folded_batch_norms
    note = f" ({folded} batch norm{'s' if folded != 1 else ''} folded)" if folded else ""
    shown = "<stdout>" if to_stdout else out
    print(
        f"wrote {shown}: {export.node_count} nodes{note}, {spec.param_count:,} parameters",
        file=sys.stderr,
    )
    if args.show:
        print(to_text(export.model()))
    return 0


def default_onnx_name(model: str) -> str:
    """`dslc compile --target onnx` without -o: the model's name, lowercased, in the current
    directory (LeNet5 -> lenet5.onnx)."""
    return f"{model.lower()}.onnx"


def _write_stdout(write: Callable[[Path], object]) -> None:
    """`-o -` for a binary model: written to a private temporary file by the same streaming
    writer as -o FILE (no copy through protobuf, whatever the size), then copied to stdout."""
    with tempfile.TemporaryDirectory(prefix="dslc-") as tmp:
        path = Path(tmp) / "model.onnx"
        write(path)
        sys.stdout.flush()
        with path.open("rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer)
        sys.stdout.buffer.flush()


def _write(path: Path, write: Callable[[Path], object]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as err:
        raise DslcError(f"cannot write {path}: {err.strerror}") from None


def cmd_train(args) -> int:
    from dslc.runtime.train import Options, train

    return train(
        Options(
            spec=args.spec,
            data=args.data,
            out=Path(args.out),
            val=args.val,
            val_split=args.val_split,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            resume=args.resume,
            device=args.device,
            export_onnx=args.export_onnx,
            checkpoint_every=args.checkpoint_every,
            params=_params(args.param),
            columns=_columns(args.columns),
            tokenizer=args.tokenizer,
        )
    )


def _columns(items: list[str]) -> dict[str, list[str]]:
    """--columns NAME=COL,COL: the CSV columns that feed array NAME, in order."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, cols = item.partition("=")
        if not sep or not name or not cols:
            raise DslcError(
                f"bad --columns '{item}'", hint="write it as NAME=COL,COL, e.g. x=a,b,c"
            )
        out[name] = [c.strip() for c in cols.split(",")]
    return out


def cmd_generate(args) -> int:
    from dslc.runtime import generate

    text = generate.run(
        generate.Options(
            spec=args.spec,
            weights=args.weights,
            onnx=args.onnx,
            params=_params(args.param),
            prompt=args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
            tokenizer=args.tokenizer,
            context=args.context,
        )
    )
    print(text)
    return 0


def cmd_run(args) -> int:
    from dslc.runtime import run as runner

    inputs = runner.parse_input_args(args.input)
    outputs, providers = runner.run_model(args.model, inputs, args.provider)
    print(runner.format_outputs(outputs))
    if args.output:
        runner.save_outputs(args.output, outputs)
    return 0


def cmd_verify(args) -> int:
    from dslc.runtime.parity import default_atol, verify

    spec = _load(args)
    batches = _batch_sizes(args.batch_sizes)
    atol = default_atol(spec) if args.atol is None else args.atol
    out = Path(args.out) if args.out else None
    print(f"{spec.path}: model {spec.name}, {spec.param_count:,} parameters")
    checks = verify(spec, batches, args.seed, out, args.provider)
    worst = max(d for c in checks for d in c.max_abs_diff.values())
    for c in checks:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in c.max_abs_diff.items())
        print(f"  batch {c.batch}: max |torch - onnxruntime| = {diffs}")
    ok = worst <= atol
    where = f" (files in {out})" if out else ""
    print(
        f"{'agree' if ok else 'DISAGREE'}: largest difference {worst:.2e}, "
        f"tolerance {atol:g}{where}"
    )
    return 0 if ok else 1


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(b) for b in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise DslcError(f"bad --batch-sizes '{text}'", hint="positive integers, e.g. 1,3,7")
    return sizes


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
    "generate": """examples:
  dslc generate --onnx runs/tiny/model.onnx --prompt "The model" --temperature 0.8 --top-k 20
  dslc generate specs/tiny_gpt.dl --weights runs/tiny/best.safetensors --prompt 'The'""",
    "run": """examples:
  dslc run lenet5.onnx --input x=x.npy
  dslc run lenet5.onnx --input x=x.npy --provider cuda -o out.npz""",
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

    spec_command("check", "parse and check a spec; print its parameter count").set_defaults(
        fn=cmd_check
    )
    spec_command(
        "summary", "print every layer with its output shape, parameters and MACs"
    ).set_defaults(fn=cmd_summary)
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
    c.set_defaults(fn=cmd_compile)
    v = spec_command("verify", "check the PyTorch module and the ONNX graph agree on random inputs")
    v.add_argument("--batch-sizes", default="1,3,7")
    v.add_argument("--atol", type=_tolerance, default=None, help="default 1e-5 (1e-2 for f16)")
    v.add_argument("--seed", type=_non_negative, default=0)
    v.add_argument("--out", help="keep model.py, weights.pt and model.onnx in this directory")
    v.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    v.set_defaults(fn=cmd_verify)
    _train_parser(spec_command("train", "train a spec's model on data files; see docs/training.md"))
    _generate_parser(_command(sub, "generate", "text from a trained language model"))
    r = _command(sub, "run", "run an ONNX model in onnxruntime")
    r.add_argument("model")
    r.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    r.add_argument("--provider", default="cpu", help="cpu or cuda")
    r.add_argument("-o", "--output", help="save the outputs to this .npz file")
    r.set_defaults(fn=cmd_run)
    return p


def _train_parser(t: argparse.ArgumentParser) -> None:
    t.add_argument(
        "--data", required=True, help=".npz, .csv, .txt, or IDX files (a:b, a directory)"
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
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    t.add_argument(
        "--export-onnx", action="store_true", help="write model.onnx from the best weights"
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
    t.set_defaults(fn=cmd_train)


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
    g.set_defaults(fn=cmd_generate)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except CompileError as err:
        n = len(err.diagnostics.items)
        print(err.diagnostics.render(color=use_color(sys.stderr)), file=sys.stderr)
        print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)
        return 1
    except DslcError as err:
        print(err.render(), file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _broken_pipe()
    except KeyboardInterrupt:
        return 130
    except Exception:
        print(
            "dslc: internal error: this is a bug in dslc; please report it with the spec.",
            file=sys.stderr,
        )
        traceback.print_exc()
        return 2


def use_color(stream: Any) -> bool:
    """Colour diagnostics only on a terminal, and never when NO_COLOR is set to anything
    (no-color.org) or TERM is dumb: piped or redirected, the text is the plain rendering."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _broken_pipe() -> int:
    """The reader of stdout went away (`dslc compile x.dl | head`): not a bug. Point stdout at
    /dev/null so that the interpreter's final flush does not fail again, and exit as a process
    killed by SIGPIPE would (128 + 13)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return 141


if __name__ == "__main__":
    sys.exit(main())
