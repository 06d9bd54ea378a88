"""The ImageNet CNNs to ONNX, dslc against what a PyTorch user would otherwise do, side by side
in one run, for each network:

(a) compile time as whole processes, interleaved: `python -m dslc compile specs/<net>.dl
    --target onnx` against `python bench/export_handwritten.py` (build the hand-written network,
    call torch.onnx.export: TorchScript exporter, opset 21, eval mode, constant folding);
(b) ONNX node counts: dslc's graph, and torch.onnx.export of the module dslc generates and of
    the hand-written one (both with random biases and batch norm statistics: with fresh ones
    many biases are equal, zero, and the exporter deduplicates them through Identity nodes);
(c) onnxruntime latency at batch 1 and 8, the three sessions interleaved call by call;
(d) that dslc's .onnx is one self-contained file (no external data).

    python bench/onnx_cnn.py [--models resnet50,vgg16] [--repeats 5] [--size 224]

Writes bench/results/onnx_cnn.json and prints Markdown tables (bench/report.py puts them in
docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
import onnx
import torch
from export_handwritten import OPSET, export
from handwritten import create
from report import onnx_cnn as render

import dslc


@dataclass(frozen=True)
class Net:
    spec: str  # the file under --spec-dir (specs/)
    channels: int
    classes: int
    fixed_size: int | None = None  # a spec without a `size` parameter


NETS = {
    "lenet5": Net("lenet5.dl", 1, 10, fixed_size=32),
    "vgg16": Net("vgg16.dl", 3, 1000),
    "googlenet": Net("googlenet.dl", 3, 1000),
    "resnet18": Net("resnet18.dl", 3, 1000),
    "resnet50": Net("resnet50.dl", 3, 1000),
}
DEFAULT_MODELS = "vgg16,googlenet,resnet18,resnet50"


def spec_path(net: Net, args: argparse.Namespace) -> str:
    return (Path(args.spec_dir) / net.spec).as_posix()


def spec_params(net: Net, size: int) -> dict[str, int]:
    return {} if net.fixed_size else {"size": size}


def compile_times(name: str, net: Net, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """(a): the two whole processes, alternating, `repeats` times each."""
    (out / "dslc").mkdir(parents=True)
    size = net.fixed_size or args.size
    params = [f"--param={k}={v}" for k, v in spec_params(net, size).items()]
    dslc_cmd = [sys.executable, "-m", "dslc", "compile", spec_path(net, args), "--target", "onnx"]
    dslc_cmd += [*params, "-o", str(out / "dslc" / "model.onnx")]
    export_cmd = [sys.executable, "bench/export_handwritten.py", name, str(size)]
    export_cmd += [str(net.classes), str(out / "export_fresh.onnx")]
    pairs = [
        (common.timed_process(dslc_cmd), common.timed_process(export_cmd))
        for _ in range(args.repeats)
    ]
    ours, theirs = [p[0] for p in pairs], [p[1] for p in pairs]
    m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
    return {"dslc_s": ours, "export_s": theirs, "dslc_median_s": m_ours,
            "export_median_s": m_theirs, "speedup": m_theirs / m_ours}  # fmt: skip


def self_contained(folder: Path) -> dict[str, Any]:
    """(d): the output folder holds the .onnx alone, and no tensor points outside it."""
    path = folder / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    uses_external = onnx.external_data_helper.uses_external_data
    external = [t.name for t in model.graph.initializer if uses_external(t)]
    onnx.checker.check_model(str(path))
    files = sorted(p.name for p in folder.iterdir())
    return {"ok": files == ["model.onnx"] and not external, "files": files,
            "external_tensors": external, "bytes": path.stat().st_size}  # fmt: skip


def trained_looking(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random biases and batch norm statistics (as tests/test_parity.py), as after training.
    Fresh ones are equal (zero biases, unit variances), and the exporter would deduplicate
    the equal initializers through Identity nodes, which then count as nodes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            bias = getattr(m, "bias", None)
            if isinstance(bias, torch.nn.Parameter):
                bias.normal_(0.0, 0.2, generator=gen)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.normal_(0.0, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
    return model


def export_both(name: str, net: Net, args: argparse.Namespace, out: Path) -> dict[str, int]:
    """(b): export the generated and the hand-written module; returns their parameter counts."""
    size = net.fixed_size or args.size
    spec = dslc.load(spec_path(net, args), spec_params(net, size))
    shape = (1, net.channels, size, size)
    torch.manual_seed(0)
    generated = trained_looking(spec.torch_module())
    export(generated, shape, out / "export_generated.onnx")
    hand = trained_looking(create(name, size, net.classes))
    export(hand, shape, out / "export_handwritten.onnx")
    count = sum(p.numel() for p in hand.parameters())
    return {"dslc": spec.param_count, "handwritten": count}


GRAPHS = ("dslc", "export_generated", "export_handwritten", "export_fresh")


def graph_path(out: Path, graph: str) -> Path:
    return out / "dslc" / "model.onnx" if graph == "dslc" else out / f"{graph}.onnx"


def node_counts(out: Path) -> dict[str, Any]:
    ops = {}
    for graph in GRAPHS:
        nodes = onnx.load(str(graph_path(out, graph)), load_external_data=False).graph.node
        ops[graph] = dict(sorted(collections.Counter(n.op_type for n in nodes).items()))
    return {"nodes": {g: sum(c.values()) for g, c in ops.items()}, "op_types": ops}


def latencies(out: Path, threads: int, budget_s: float) -> dict[str, Any]:
    """(c): dslc, the hand-written export, the generated export; batch 1 and 8."""
    graphs = ("dslc", "export_handwritten", "export_generated")
    result = {}
    for batch in (1, 8):
        paths = [graph_path(out, g) for g in graphs]
        medians, runs = common.ort_latencies(paths, batch, threads, budget_s)
        result[str(batch)] = {"runs": runs, **dict(zip(graphs, medians, strict=True))}
    return result


def bench_one(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    net = NETS[name]
    size = net.fixed_size or args.size
    out = work / name
    print(f"{name}: compiling and exporting ({args.repeats} times each)...", file=sys.stderr)
    result: dict[str, Any] = {"spec": spec_path(net, args), "size": size, "classes": net.classes}
    result["compile"] = compile_times(name, net, args, out)
    result["self_contained"] = self_contained(out / "dslc")
    result["params"] = export_both(name, net, args, out)
    result |= node_counts(out)
    print(f"{name}: onnxruntime latency...", file=sys.stderr)
    result["latency_s"] = latencies(out, args.threads, args.budget)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    choices = ",".join(NETS)
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated, of {choices}")
    parser.add_argument("--repeats", type=int, default=5, help="compile processes of each kind")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--spec-dir", default="specs", help="where the .dl files are")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per latency table row")
    args = parser.parse_args()
    names = args.models.split(",")
    if unknown := [n for n in names if n not in NETS]:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(NETS)}")
    data: dict[str, Any] = {"machine": common.machine(), "opset": OPSET, "repeats": args.repeats,
                            "threads": args.threads, "results": {}}  # fmt: skip
    data["missing"] = [n for n in names if not (common.ROOT / spec_path(NETS[n], args)).exists()]
    for name in data["missing"]:
        print(f"{name}: skipped, no {spec_path(NETS[name], args)}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="dslc-bench-") as work:
        for name in names:
            if name not in data["missing"]:
                data["results"][name] = bench_one(name, args, Path(work))
    print(f"wrote {common.write_json('onnx_cnn', data).relative_to(common.ROOT)}", file=sys.stderr)
    print(render(data))


if __name__ == "__main__":
    main()
