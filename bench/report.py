"""Markdown tables from the benchmarks' JSON results, and docs/benchmarks.md kept in step:

    python bench/report.py            # rewrite the tables in docs/benchmarks.md

Each table sits between `<!-- begin NAME -->` and `<!-- end NAME -->` in the docs, NAME being
the JSON file under bench/results/. Only json and the standard library: no torch needed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"


def machine_line(data: dict[str, Any], what: str) -> str:
    m = data["machine"]
    return (
        f"Taken {m['date']} on {m['platform']} ({m['processor']}, {m['cpus']} CPUs, load "
        f"average {m['load']} at the start{_busy(m)}), Python "
        f"{m['python']}, torch {m['torch']}, onnx {m['onnx']}, onnxruntime {m['onnxruntime']}; "
        f"{what}."
    )


def _busy(m: dict[str, Any]) -> str:
    return ": a busy machine, the timings are provisional" if m["load"] > 0.5 * m["cpus"] else ""


def ms(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def onnx_cnn(data: dict[str, Any]) -> str:
    what = (
        f"compile: median of {data['repeats']} whole processes each, interleaved; latency: "
        f"onnxruntime CPU, {data['threads']} intra-op thread(s), sessions interleaved call by "
        f"call, median; opset {data['opset']}"
    )
    lines = [machine_line(data, what), "", *_compile_table(data["results"]), ""]
    notes = _notes(data["results"])
    notes += [f"- {name}: not measured, its spec was missing." for name in data.get("missing", [])]
    return "\n".join([*lines, *_latency_table(data["results"]), "", *notes])


def _compile_table(results: dict[str, Any]) -> list[str]:
    rows = [
        "| network | input | parameters | dslc compile | hand-written + export | speed-up "
        "| nodes: dslc | export of generated | export of hand-written | one self-contained file |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        c, n, p = r["compile"], r["nodes"], r["params"]
        params = f"{p['dslc']:,}" if p["dslc"] == p["handwritten"] else (
            f"{p['dslc']:,} (hand-written {p['handwritten']:,}!)"
        )  # fmt: skip
        alone = r["self_contained"]
        contained = f"yes, {alone['bytes']:,} B" if alone["ok"] else "NO"
        rows.append(
            f"| {name} | {r['size']}x{r['size']} | {params} | {ms(c['dslc_median_s'])} "
            f"| {ms(c['export_median_s'])} | {c['speedup']:.1f}x | {n['dslc']} "
            f"| {n['export_generated']} | {n['export_handwritten']} | {contained} |"
        )
    return rows


def _latency_table(results: dict[str, Any]) -> list[str]:
    rows = [
        "| network | batch | dslc | export of hand-written | export of generated "
        "| hand-written / dslc | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for batch, t in r["latency_s"].items():
            rows.append(
                f"| {name} | {batch} | {ms(t['dslc'])} | {ms(t['export_handwritten'])} "
                f"| {ms(t['export_generated'])} | {t['export_handwritten'] / t['dslc']:.2f}x "
                f"| {t['runs']} |"
            )
    return rows


def _notes(results: dict[str, Any]) -> list[str]:
    """What the exporter did with batch norm, read from the op types of its graphs."""
    notes = []
    for name, r in results.items():
        ops = r["op_types"]
        kept = ops["export_handwritten"].get("BatchNormalization", 0)
        identities = ops["export_fresh"].get("Identity", 0)
        notes.append(
            f"- {name}: the export keeps {kept} BatchNormalization node(s); exported with "
            f"freshly initialized weights it has {identities} Identity node(s) "
            f"({r['nodes']['export_fresh']} nodes in all)."
        )
    return notes


def train_throughput(data: dict[str, Any]) -> str:
    what = (
        f"batch {data['batch']}, {data['optimizer']}, {data['threads']} torch thread(s), "
        f"{data['clock']} clock; "
        f"{data['rounds']} interleaved rounds per network after warm-up, median steps/s, "
        "ratio the median of the per-round ratios"
    )
    rows = [
        "| network | input | parameters | generated (steps/s) | hand-written (steps/s) "
        "| generated / hand-written | within 1.00 +/- 0.03 | steps per round |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in data["results"].items():
        ratio = r["ratio"]
        within = "yes" if abs(ratio - 1) <= 0.03 else "no"
        rows.append(
            f"| {name} | {r['size']}x{r['size']} | {r['params']:,} | {r['generated']:.2f} "
            f"| {r['handwritten']:.2f} | {ratio:.3f} | {within} | {r['steps_per_round']} |"
        )
    return "\n".join([machine_line(data, what), "", *rows])


def onnx_gpt(data: dict[str, Any]) -> str:
    what = (
        f"compile: median of {data['repeats']} whole processes each, interleaved; latency: "
        f"onnxruntime CPU, batch 1, T = {data['length']}, {data['threads']} intra-op thread(s), "
        f"sessions interleaved call by call, median of {data['latency']['rounds']} rounds"
    )
    c, f, lat = data["compile"], data["files"], data["latency"]
    rows = [
        "| graph | compile (whole process) | file | token matrix stored | nodes | opset "
        "| latency | vs export |",
        "|---|---|---|---|---|---|---|---|",
    ]
    times = {"dslc": c["dslc_median_s"], "decomposed": None, "export": c["export_median_s"]}
    labels = {
        "dslc": "dslc (fused ops)",
        "decomposed": "dslc --decompose",
        "export": "torch.onnx.export of the generated module",
    }
    for name, label in labels.items():
        r, t = f[name], times[name]
        rows.append(
            f"| {label} | {ms(t) if t else 'same'} | {r['bytes'] / 2**20:.0f} MiB "
            f"| {r['token_matrix_copies']}x | {r['nodes']} | {r['opset']} | {ms(lat[name])} "
            f"| {lat[name] / lat['export']:.2f}x |"
        )
    size = f["dslc"]["bytes"] / f["export"]["bytes"]
    note = (
        f"Compile speed-up: {c['speedup']:.1f}x (dslc {ms(c['dslc_median_s'])}, export "
        f"{ms(c['export_median_s'])}); file: dslc's is {size:.2f}x the export's."
    )
    return "\n".join([machine_line(data, what), "", *rows, "", note])


def quant_vision(data: dict[str, Any]) -> str:
    what = f"onnxruntime CPU, {data['threads']} intra-op thread(s), sessions interleaved, median"
    r = data["resnet50"]
    size = r["bytes"]["int8"] / r["bytes"]["float"]
    rows = ["| ResNet-50 | float | int8 static | int8 / float | target |", "|---|---|---|---|---|"]
    for batch in (1, 8):
        b = r[f"batch{batch}"]
        rows.append(
            f"| latency, batch {batch} | {ms(b['float'])} | {ms(b['int8'])} "
            f"| {b['int8'] / b['float']:.2f}x | <= 0.6x |"
        )
    rows.append(
        f"| file | {r['bytes']['float'] / 2**20:.1f} MiB | {r['bytes']['int8'] / 2**20:.1f} MiB "
        f"| {size:.2f}x | <= 0.3x |"
    )
    lines = [machine_line(data, what), "", *rows, "", "Digits CNN, `--validate` on its 359 "
             "validation images (`--max-drop 0.5`):", ""]  # fmt: skip
    for name, case in data["digits"].items():
        verdict = "written" if case["written"] else "refused, nothing written"
        lines.append(f"- {name}: exit {case['exit']}, {verdict}")
        lines += [f"  - `{line}`" for line in case["report"] if "accuracy" in line]
    return "\n".join(lines)


def quant_gpt(data: dict[str, Any]) -> str:
    what = f"onnxruntime CPU, {data['threads']} intra-op thread(s), batch 1, interleaved, median"
    lay, q = data["layout"], data["int8"]
    rows = [
        "| GPT-2 small layout | file | nodes | weight Transposes | session creation "
        "| MatMuls quantize_dynamic quantizes |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in [("before", "weights transposed at run time"), ("dslc", "dslc now")]:
        r = lay[name]
        rows.append(
            f"| {label} | {r['bytes']:,} B | {r['nodes']} | {r['weight_transposes']} "
            f"| {ms(r['session_s'])} | {r['quantized_matmuls']} |"
        )
    rows += ["", "| GPT-2 small | float | int8 dynamic | int8 / float |", "|---|---|---|---|"]
    rows.append(
        f"| file | {q['float_bytes'] / 2**20:.0f} MiB | {q['bytes'] / 2**20:.0f} MiB "
        f"| {q['bytes'] / q['float_bytes']:.2f}x |"
    )
    for length in (1, 128):
        t = q[f"T{length}"]
        rows.append(
            f"| latency, T = {length} | {ms(t['float'])} | {ms(t['int8'])} "
            f"| {t['int8'] / t['float']:.2f}x |"
        )
    return "\n".join([machine_line(data, what), "", *rows])


GENERATE_LABELS = {
    "onnx_cache": "dslc ONNX --kv-cache (fused Attention)",
    "onnx_cache_int8": "dslc ONNX --kv-cache --quantize int8 (dynamic)",
    "onnx_cache_decomposed": "dslc ONNX --kv-cache --decompose",
    "onnx_recompute": "dslc ONNX, whole window per token (dslc generate before the cache)",
    "torch_cache": "generated PyTorch module, KVCache",
    "torch_recompute": "generated PyTorch module, whole window per token",
    "export_handwritten": "torch.onnx.export + hand-written onnxruntime loop",
    "dynamo_handwritten": "torch.onnx.export(dynamo=True) + hand-written onnxruntime loop",
}


def generate_gpt(data: dict[str, Any]) -> str:
    threads = data.get("torch_threads", data["threads"])
    torch_threads = f" (torch: {threads})" if threads != data["threads"] else ""
    what = (
        f"{data['new']} new tokens (greedy) after a {data['prompt']}-token prompt, batch 1, "
        f"{data['threads']} thread(s){torch_threads}, one generation per path"
    )
    runs, base = data["runs"], data["runs"]["onnx_recompute"]["tokens_per_s"]
    rows = [
        "| path | tokens/s | vs dslc ONNX recompute | first call | median step | same tokens |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in GENERATE_LABELS.items():
        if name not in runs:
            continue
        r = runs[name]
        rows.append(
            f"| {label} | {r['tokens_per_s']:.2f} | {r['tokens_per_s'] / base:.2f}x "
            f"| {ms(r['first_s'])} | {ms(r['step_median_s'])} | {_same(data, name)} |"
        )
    cache, export = runs["onnx_cache"]["tokens_per_s"], runs["export_handwritten"]["tokens_per_s"]
    note = (
        f"Cache vs recompute (dslc ONNX): {cache / base:.1f}x (target 8x); vs torch.onnx.export "
        f"with a hand-written loop: {cache / export:.1f}x; the export itself took "
        f"{data['export_s']:.1f} s{_dynamo(data)}."
    )
    return "\n".join([machine_line(data, what), "", *rows, "", note, *_int8_decode(data)])


HAND_LABELS = {
    "onnx_cache": "dslc ONNX --kv-cache (fused norms and GELU)",
    "onnx_cache_decomposed": "dslc ONNX --kv-cache --decompose",
    "onnx_recompute": "dslc ONNX, whole window per token",
    "torch_cache": "generated PyTorch module, KVCache",
    "torch_recompute": "generated PyTorch module, whole window per token",
}


def generate_by_hand(data: dict[str, Any]) -> str:
    """Cache against recompute for attention written by hand, one table per spec."""
    what = (
        f"{data['new']} new tokens (greedy) after a {data['prompt']}-token prompt, batch 1, "
        f"{data['threads']} thread(s), one generation per path"
    )
    out = [machine_line(data, what)]
    for path, d in data["specs"].items():
        runs, base = d["runs"], d["runs"]["onnx_recompute"]["tokens_per_s"]
        out += ["", f"`{path}` at {d['parameters']:,} parameters (`--param` {d['params']}):", ""]
        out += [
            "| path | tokens/s | vs dslc ONNX recompute | first call | median step | same tokens |",
            "|---|---|---|---|---|---|",
        ]
        for name, label in HAND_LABELS.items():
            if name in runs:
                r, same = runs[name], "yes" if d["same_tokens"][name] else "NO"
                out.append(
                    f"| {label} | {r['tokens_per_s']:.2f} | {r['tokens_per_s'] / base:.2f}x "
                    f"| {ms(r['first_s'])} | {ms(r['step_median_s'])} | {same} |"
                )
    return "\n".join(out)


def _same(data: dict[str, Any], name: str) -> str:
    if name == "onnx_cache_int8" and "int8_agree" in data:
        return f"{data['int8_agree']} of {data['new']} agree"
    return "yes" if data["same_tokens"][name] else "NO"


def _dynamo(data: dict[str, Any]) -> str:
    d = data.get("dynamo")
    if not d:
        return ""
    if "error" in d:
        return f"; the dynamo exporter failed: `{d['error']}`"
    runs = data["runs"]
    ratio = runs["onnx_cache"]["tokens_per_s"] / runs["dynamo_handwritten"]["tokens_per_s"]
    return (
        f"; vs the dynamo exporter with the same loop: {ratio:.1f}x, "
        f"its export {d['export_s']:.1f} s as a whole process"
    )


def _int8_decode(data: dict[str, Any]) -> list[str]:
    """Float against int8 decode steps, interleaved call by call on the same tokens."""
    d = data.get("decode_interleaved")
    if not d:
        return []
    f, q, b = d["float_step_s"], d["int8_step_s"], data["bytes"]
    return [
        "",
        f"Decode, float against int8 --kv-cache, {d['steps']} steps interleaved call by call on "
        "the float decoder's tokens:",
        "",
        "| decoder | file | median decode step | tokens/s at decode | argmax as float's |",
        "|---|---|---|---|---|",
        f"| float + cache | {b['cache'] / 2**20:.0f} MiB | {ms(f)} | {1 / f:.1f} | |",
        f"| int8 + cache | {b['cache_int8'] / 2**20:.0f} MiB | {ms(q)} | {1 / q:.1f} "
        f"| {d['argmax_agree']} of {d['steps']} |",
        "",
        f"int8 + cache vs float + cache at decode: {d['speedup']:.2f}x (median of the per-step "
        f"ratios; target 2.5x); in the generations above "
        f"{runs_ratio(data):.2f}x in tokens/s. Per step, int8's logits differ from float's by "
        f"up to {d['logit_diff_median']:.3f} (median over the steps), while float's best logit "
        f"leads its second by {d['top2_margin_median']:.3f} (median).",
    ]


def runs_ratio(data: dict[str, Any]) -> float:
    runs = data["runs"]
    return runs["onnx_cache_int8"]["tokens_per_s"] / runs["onnx_cache"]["tokens_per_s"]


def detection(data: dict[str, Any]) -> str:
    what = (
        f"compile and session creation: median of {data['repeats']}; latency: onnxruntime CPU "
        "against the generated module (eval, no_grad), called in turn on the same images, "
        f"median of the rounds that fit {data.get('budget_s', 12):.0f} s (at least 3); load "
        f"average {data['machine']['load_end']} at the end"
    )
    rows = [
        "| spec | input | parameters | dslc compile | file | nodes | session creation "
        "| torch.onnx.export | export / compile |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lat = [
        "| spec | input | threads | batch | onnxruntime | PyTorch | PyTorch / onnxruntime "
        "| detections (onnxruntime, PyTorch) | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, r in data["results"].items():
        f, e = r["file"], r["export"]["torchscript"]
        verdict = "exported" if e["exported"] else "failed"
        rows.append(
            f"| {name} | {r['size']}x{r['size']} | {r['params']:,} | {ms(r['compile_s'])} "
            f"| {f['bytes'] / 2**20:.1f} MiB | {f['nodes']} | {ms(f['session_s'])} "
            f"| {verdict} after {ms(e['process_s'])} | {e['process_s'] / r['compile_s']:.1f}x |"
        )
        for key, t in r["latency"].items():
            threads, batch = key.split("/")
            lat.append(
                f"| {name} | {r['size']}x{r['size']} | {threads} | {batch} | {ms(t['ort'])} "
                f"| {ms(t['torch'])} | {t['torch'] / t['ort']:.2f}x "
                f"| {t['detections'][0]}, {t['detections'][1]} | {t['runs']} |"
            )
        notes += [f"- {name}: {_export_note(k, x)}" for k, x in r["export"].items()]
    return "\n".join([machine_line(data, what), "", *rows, "", *lat, "", *notes])


def _export_note(exporter: str, e: dict[str, Any]) -> str:
    if not e["exported"]:
        traced = (
            f" ({e['tracer_warnings']} TracerWarnings first)" if e.get("tracer_warnings") else ""
        )
        return f"{exporter} exporter: `{e['error']}`{traced}"
    check = e["check"]
    if not check["loads"]:
        return f"{exporter} exporter: exported; onnxruntime refuses it: `{check['error']}`"
    runs = [f"{k}: {_checked(v)}" for k, v in check.items() if k != "loads"]
    return f"{exporter} exporter: exported ({e['tracer_warnings']} TracerWarnings); " + "; ".join(
        runs
    )


def _checked(run: dict[str, Any]) -> str:
    if not run["runs"]:
        return f"fails in onnxruntime, `{run['error']}`"
    same = "as PyTorch" if run["equal"] else "NOT as PyTorch"
    return f"{run['detections']} detections (PyTorch {run['torch']}), {same}"


RENDER = {
    "onnx_cnn": onnx_cnn,
    "train_throughput": train_throughput,
    "onnx_gpt": onnx_gpt,
    "quant_vision": quant_vision,
    "quant_gpt": quant_gpt,
    "generate_gpt": generate_gpt,
    "generate_by_hand": generate_by_hand,
    "detection": detection,
}


def update_docs(docs: Path = DOCS) -> list[str]:
    """Replace each marked table whose JSON exists; returns the names replaced."""
    text, done = docs.read_text(), []
    for name, render in RENDER.items():
        path = ROOT / "bench" / "results" / f"{name}.json"
        pattern = re.compile(rf"(<!-- begin {name} -->\n).*?(<!-- end {name} -->)", re.S)
        if path.exists() and pattern.search(text):
            table = render(json.loads(path.read_text()))
            text = pattern.sub(lambda m: f"{m[1]}{table}\n{m[2]}", text)  # noqa: B023
            done.append(name)
    docs.write_text(text)
    return done


if __name__ == "__main__":
    print("updated docs/benchmarks.md:", ", ".join(update_docs()) or "nothing")
