"""The Python API, which the CLI mirrors: load a spec, get its diagnostics, IR, PyTorch source
or module, and ONNX model."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lark

from dslc.diagnostics import CompileError, Diagnostics, Span, SpecError
from dslc.errors import DslcError
from dslc.frontend.imports import resolve
from dslc.frontend.parse import parse, parser
from dslc.ir.check import verify
from dslc.ir.graph import Graph
from dslc.ir.part import part
from dslc.ir.printer import format_graph
from dslc.lower.elaborate import Elaborator
from dslc.lower.training import lower_training


@dataclass
class Spec:
    """A spec that compiled without errors."""

    path: str
    source: str
    graph: Graph
    imported: dict[str, str] = field(default_factory=dict)  # each imported file's text, by path

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def param_count(self) -> int:
        return self.graph.param_count()

    def ir_text(self) -> str:
        return format_graph(self.graph)

    def summary(self) -> str:
        from dslc.tools.summary import summarize

        return summarize(self.graph)

    def part(self, instance: str) -> Spec:
        """One block instance (`decoder1`) as a model of its own (dslc.ir.part): compile it to ONNX
        or PyTorch like a spec. Its parameters are the instance's, without the prefix: from a
        full model's state_dict take the keys `decoder1.*` and drop `decoder1.`."""
        try:
            return Spec(self.path, self.source, part(self.graph, instance), self.imported)
        except SpecError as err:  # no place in the spec to point at: a plain user error
            raise DslcError(err.message, err.hint) from None

    def torch_source(self) -> str:
        from dslc.backends.torch import model as torch_backend

        return torch_backend.emit(self.graph)

    def torch_namespace(self) -> dict[str, Any]:
        """Execute the generated source; returns its globals (the class, create_model, ...)."""
        namespace: dict[str, Any] = {"__name__": f"dslc_generated_{self.name}"}
        exec(compile(self.torch_source(), f"<dslc {self.path}>", "exec"), namespace)
        return namespace

    def torch_module(self):
        return self.torch_namespace()["create_model"]()

    def onnx_model(
        self,
        weights: Any = None,
        seed: int = 0,
        fold_batch_norm: bool = True,
        fused: bool = True,
        kv_cache: bool = False,
    ):
        """The ONNX ModelProto, for inference. `weights`: a state_dict (tensors or arrays), a
        path to a saved state_dict or safetensors file, or None for the spec's initializers
        drawn with `seed`. `fold_batch_norm`: fold batch norm into the layer before it.
        `fused`: use onnxruntime's fused ops (LayerNormalization, Gelu, Attention,
        RMSNormalization; opset 23 where a model needs it); False decomposes them.
        `kv_cache`: a decoder with past and present keys and values."""
        return self.onnx_export(weights, seed, fold_batch_norm, fused, kv_cache).model()

    def onnx_export(
        self,
        weights: Any = None,
        seed: int = 0,
        fold_batch_norm: bool = True,
        fused: bool = True,
        kv_cache: bool = False,
    ) -> OnnxExport:
        """The checked ONNX model, ready to write to a file (what `dslc compile` does) or to
        take as a ModelProto. `kv_cache`: a decoder with past and present keys and values
        (backends/onnx/kvcache.py); CompileError at a layer that rules the cache out."""
        from dslc.backends.onnx import file as onnx_file
        from dslc.backends.onnx import model as onnx_backend
        from dslc.backends.params import resolve_weights
        from dslc.ir.fold import fold_batch_norm as fold

        if kv_cache:
            self._check_kv_cache()
        graph, arrays = self.graph, resolve_weights(self.graph, weights, seed)
        folded = 0
        if fold_batch_norm:
            graph, arrays, folded = fold(graph, arrays, in_place=weights is None)
        skeleton, large = onnx_backend.build_lazy(graph, arrays, fused, kv_cache)
        onnx_file.check(skeleton, large)
        return OnnxExport(skeleton, large, folded)

    def _check_kv_cache(self) -> None:
        from dslc.ir.causal import plan

        try:
            plan(self.graph)
        except SpecError as err:
            diags = Diagnostics(self.source)
            diags.error(err.span, err.message, err.hint)
            raise CompileError(diags) from None


@dataclass
class OnnxExport:
    """A checked model: its skeleton (onnx.ModelProto without the large initializers' data),
    those arrays, and how many batch norms were folded."""

    skeleton: Any
    large: dict[str, Any]
    folded_batch_norms: int

    @property
    def node_count(self) -> int:
        return len(self.skeleton.graph.node)

    def model(self):
        from dslc.backends.onnx import file as onnx_file

        return onnx_file.whole(self.skeleton, self.large)

    def write(self, path: str | os.PathLike) -> int:
        """One self-contained .onnx file; returns its size in bytes."""
        from dslc.backends.onnx import file as onnx_file

        return onnx_file.write(Path(path), self.skeleton, self.large)


STDIN = "-"  # as a spec path: read the spec from standard input


def display_path(path: str | os.PathLike) -> str:
    """How a spec's path appears in messages and outputs: as the user gave it, relative or
    absolute, so that an editor or terminal can jump to `path:line:col` (only normalized:
    `./a//b.dl` is `a/b.dl`). Outputs stay deterministic for a given command line: the goldens
    are compiled from `specs/x.dl`. Standard input is `<stdin>`."""
    if os.fspath(path) == STDIN:
        return "<stdin>"
    return Path(path).as_posix()


def compile_source(source: str, path: str = "<spec>", params: dict[str, Any] | None = None) -> Spec:
    """Compile .dl text; raises CompileError holding every diagnostic."""
    diags = Diagnostics(source)
    try:
        return _compile(source, path, params, diags)
    except RecursionError:
        _too_deep(source, path, diags)
    except lark.exceptions.VisitError as err:  # raised inside the parse tree's transformer
        cause = err.orig_exc
        if isinstance(cause, RecursionError):
            _too_deep(source, path, diags)
        elif isinstance(cause, SpecError):  # a node it refuses, such as a too large literal
            diags.error(cause.span, cause.message, cause.hint)
        else:
            raise
    raise CompileError(diags) from None


def _too_deep(source: str, path: str, diags: Diagnostics) -> None:
    diags.error(
        _deepest_statement(source, path),
        "the spec nests expressions or pipelines too deeply",
        "split long chains with named intermediate tensors",
    )


_STATEMENTS = frozenset({"assign", "input_decl", "output_decl", "target_decl"})


def _deepest_statement(source: str, path: str) -> Span:
    """Where a RecursionError points: the statement holding the parse tree's deepest node.
    Parsing is LALR, so it does not recurse, and this walk keeps its own stack."""
    try:
        tree = parser().parse(source)
    except (lark.exceptions.LarkError, RecursionError):
        return Span.start_of(path)
    best, best_depth = None, -1
    stack: list[tuple[Any, int, Any]] = [(tree, 0, None)]
    while stack:
        node, depth, statement = stack.pop()
        if not isinstance(node, lark.Tree):
            continue
        if statement is None and node.data in _STATEMENTS:
            statement = node
        if statement is not None and depth > best_depth:
            best, best_depth = statement, depth
        stack.extend((child, depth + 1, statement) for child in node.children)
    if best is None:
        return Span.start_of(path)
    m = best.meta
    return Span(path, m.line, m.column, m.end_line, m.end_column)


def _compile(source: str, path: str, params: dict[str, Any] | None, diags: Diagnostics) -> Spec:
    program = parse(source, path, diags)
    if program is not None:
        program = resolve(program, diags)  # imports: relative to the spec's folder
    if program is not None:
        el = Elaborator(program, diags)
        graph, scope = el.run(params or {})
        if graph is not None and scope is not None and not diags.has_errors:
            lower_training(el, program, graph, scope, diags)
        if graph is not None and not diags.has_errors:
            verify(graph)
            return Spec(path, source, graph, program.sources)
    raise CompileError(diags)


def read_spec(path: str | os.PathLike) -> str:
    if os.fspath(path) == STDIN:
        return _read_stdin()
    try:
        return Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is not code
    except FileNotFoundError:
        raise DslcError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DslcError(f"cannot read {path}: {err}") from None


def _read_stdin() -> str:
    """The spec piped in (`dslc check - < x.dl`), decoded as UTF-8 like a file, whatever the
    locale says standard input's encoding is."""
    if sys.stdin is None:
        raise DslcError("cannot read <stdin>: there is no standard input")
    try:
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is None:  # a text stream without bytes underneath (io.StringIO)
            return sys.stdin.read().removeprefix("\ufeff")
        return buffer.read().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DslcError(f"cannot read <stdin>: {err}") from None


def load(path: str | os.PathLike, params: dict[str, Any] | None = None) -> Spec:
    return compile_source(read_spec(path), display_path(path), params)


def check(path: str | os.PathLike, params: dict[str, Any] | None = None) -> Diagnostics:
    """Every diagnostic for the spec at `path` (empty when it compiles)."""
    source = read_spec(path)
    try:
        compile_source(source, display_path(path), params)
    except CompileError as err:
        return err.diagnostics
    return Diagnostics(source)
