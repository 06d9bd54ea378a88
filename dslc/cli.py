"""The `dslc` command. Exit codes: 0 success, 1 a user error (in the spec, the arguments or the
files), 2 an internal error, which is a bug in dslc; 141 when the reader of stdout left early.
`-` is standard input as the spec and standard output as `-o`."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dslc.api import Spec, load
from dslc.arguments import build_parser, check_quantize_flags, default_onnx_name
from dslc.diagnostics import CompileError
from dslc.errors import DslcError


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
    check_quantize_flags(args)
    spec = _load(args)
    if args.part:
        spec = spec.part(args.part)
    if args.target == "onnx":
        return _compile_onnx(spec, args)
    if args.kv_cache:
        raise DslcError(
            "--kv-cache is for --target onnx",
            hint="the PyTorch file of a spec with causal attention has a KVCache class anyway",
        )
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
        args.weights,
        args.seed,
        fold_batch_norm=not args.no_fold,
        fused=not args.decompose,
        kv_cache=args.kv_cache,
    )
    if args.kv_cache:  # for dslc generate --onnx, which has no spec to read it from
        from dslc.runtime.generate import spec_context
        from dslc.runtime.train.export import CONTEXT_KEY

        context = spec_context(spec)
        if context is not None:
            export.skeleton.metadata_props.add(key=CONTEXT_KEY, value=str(context))
    out = Path(args.output or default_onnx_name(spec.name))
    if args.quantize:
        from dslc.runtime.quantized import export_quantized

        where = "<stdout>" if to_stdout else str(out)
        write = (lambda w: _write_stdout(w)) if to_stdout else (lambda w: _write(out, w))
        return export_quantized(spec, export, args, write, where)
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
            resume=args.resume or args.force_resume,
            force_resume=args.force_resume,
            accumulate=args.accumulate,
            precision=args.precision,
            device=args.device,
            export_onnx=args.export_onnx,
            quantize=args.quantize,
            checkpoint_every=args.checkpoint_every,
            params=_params(args.param),
            columns=_columns(args.columns),
            tokenizer=args.tokenizer,
            init_from=args.init_from,
            allow_missing=args.allow_missing,
            workers=args.workers,
            bake_normalize=args.bake_normalize,
        )
    )


def cmd_eval(args) -> int:
    from dslc.runtime.train.evaluate import Options, evaluate

    text, written = evaluate(
        Options(
            spec=args.spec,
            weights=args.weights,
            data=args.data,
            params=_params(args.param),
            columns=_columns(args.columns),
            batch_size=args.batch_size,
            confusion=args.confusion,
            precision=args.precision,
        )
    )
    print(text)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


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
            kv_cache=not args.no_kv_cache,
        )
    )
    print(text)
    return 0


def cmd_run(args) -> int:
    from dslc.runtime import run as runner

    inputs = runner.parse_input_args(args.input)
    outputs, providers = runner.run_model(args.model, inputs, args.provider)
    print(runner.format_outputs(outputs))
    from dslc.runtime import boxes, topk

    found = boxes.outputs_of(args.model)
    if found:
        count = max((len(a) for a in inputs.values() if a.ndim), default=0)
        print(boxes.report(outputs, found, count, topk.class_names(args.model)))
    if args.top_k:
        print(topk.report(args.model, outputs, args.top_k))
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
    lengths = len({c.length for c in checks}) > 1
    for c in checks:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in c.max_abs_diff.items())
        at = f"batch {c.batch}, length {c.length}" if lengths else f"batch {c.batch}"
        print(f"  {at}: max |torch - onnxruntime| = {diffs}")
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


def cmd_weights(args) -> int:
    from dslc.runtime.weights_map import map_weights

    print("\n".join(map_weights(_load(args), args.weights, args.output)))
    return 0


COMMANDS: dict[str, Callable[[Any], int]] = {
    "check": cmd_check,
    "summary": cmd_summary,
    "compile": cmd_compile,
    "verify": cmd_verify,
    "train": cmd_train,
    "eval": cmd_eval,
    "generate": cmd_generate,
    "run": cmd_run,
    "weights": cmd_weights,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
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
