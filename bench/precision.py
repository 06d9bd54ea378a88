"""What `dslc train --precision` costs on the CPU: the median time of one training step (forward
and loss under the precision's autocast, backward, Adam step; fp16 through a GradScaler, as
dslc.runtime.train.loop does) of a spec's generated module, for fp32, bf16 and fp16.

    python bench/precision.py [--spec specs/digits_resnet.dl] [--batch 32] [--steps 40]
        [--threads 1]

The input is random, of the spec's input shape with N = --batch; the labels are random classes
of its output. The first fifth of the steps are a warm-up and not counted. Prints a Markdown
table (docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from dslc.api import load  # noqa: E402
from dslc.runtime.train import precision  # noqa: E402


def step_times(spec: str, kind: str, batch: int, steps: int) -> list[float]:
    ns = load(spec).torch_namespace()
    torch.manual_seed(0)
    model = ns["create_model"]()
    ((_, (_, *dims)),) = ns["INPUTS"].values()
    ((_, (_, classes)),) = ns["OUTPUTS"].values()
    x, y = torch.randn(batch, *dims), torch.randint(0, classes, (batch,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    cpu = torch.device("cpu")
    scaler = precision.scaler(kind, cpu)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        with precision.autocast(kind, cpu):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        times.append(time.perf_counter() - start)
    return times[steps // 5 :]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default="specs/digits_resnet.dl")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.spec}, batch {args.batch}, {args.threads} thread(s), torch {torch.__version__}")
    print("\n| precision | ms per step (median) | against fp32 |\n|---|---|---|")
    base = None
    for kind in precision.CHOICES:
        ms = 1000 * statistics.median(step_times(args.spec, kind, args.batch, args.steps))
        base = base or ms
        print(f"| {kind} | {ms:.1f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
