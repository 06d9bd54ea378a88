"""The Python API, which the CLI mirrors: load a spec, get its diagnostics, IR, PyTorch source
or module, and ONNX model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dslc.diagnostics import CompileError, Diagnostics, SpecError
from dslc.errors import DslcError
from dslc.frontend.parse import parse
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
            return Spec(self.path, self.source, part(self.graph, instance))
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
    ):
        """The ONNX ModelProto, for inference. `weights`: a state_dict (tensors or arrays), a
        path to a saved state_dict or safetensors file, or None for the spec's initializers
        drawn with `seed`. `fold_batch_norm`: fold batch norm into the layer before it.
        `fused`: use onnxruntime's fused ops (LayerNormalization, Gelu, Attention,
        RMSNormalization; opset 23 where a model needs it); False decomposes them."""
        return self.onnx_export(weights, seed, fold_batch_norm, fused).model()

    def onnx_export(
        self,
        weights: Any = None,
        seed: int = 0,
        fold_batch_norm: bool = True,
        fused: bool = True,
    ) -> OnnxExport:
        """The checked ONNX model, ready to write to a file (what `dslc compile` does) or to
        take as a ModelProto."""
        from dslc.backends.onnx import file as onnx_file
        from dslc.backends.onnx import model as onnx_backend
        from dslc.backends.params import resolve_weights
        from dslc.ir.fold import fold_batch_norm as fold

        graph, arrays = self.graph, resolve_weights(self.graph, weights, seed)
        folded = 0
        if fold_batch_norm:
            graph, arrays, folded = fold(graph, arrays, in_place=weights is None)
        skeleton, large = onnx_backend.build_lazy(graph, arrays, fused)
        onnx_file.check(skeleton, large)
        return OnnxExport(skeleton, large, folded)


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


def display_path(path: str | os.PathLike) -> str:
    """How a spec's path appears in messages and outputs: as given, but never absolute."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return p.name


def compile_source(source: str, path: str = "<spec>", params: dict[str, Any] | None = None) -> Spec:
    """Compile .dl text; raises CompileError holding every diagnostic."""
    diags = Diagnostics(source)
    try:
        return _compile(source, path, params, diags)
    except RecursionError:
        diags.error(
            None,
            f"{path}: the spec nests expressions or pipelines too deeply",
            "split long chains with named intermediate tensors",
        )
        raise CompileError(diags) from None


def _compile(source: str, path: str, params: dict[str, Any] | None, diags: Diagnostics) -> Spec:
    program = parse(source, path, diags)
    if program is not None:
        el = Elaborator(program, diags)
        graph, scope = el.run(params or {})
        if graph is not None and scope is not None and not diags.has_errors:
            lower_training(el, program, graph, scope, diags)
        if graph is not None and not diags.has_errors:
            verify(graph)
            return Spec(path, source, graph)
    raise CompileError(diags)


def read_spec(path: str | os.PathLike) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is not code
    except FileNotFoundError:
        raise DslcError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DslcError(f"cannot read {path}: {err}") from None


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
