"""Training throughput of the module dslc generates against the same network written by hand
(bench/handwritten.py), side by side in one run: optimizer steps per second on CPU.

Both sides get the same seed, the same batches (random images and labels, drawn once), the
same loss (cross entropy) and the same optimizer (SGD with momentum and weight decay; the
spec's own train section is not used, so that only the modules differ). After a warm-up,
rounds alternate between them (A then B, then B then A, ...), each round a fixed number of
steps; the result is the median steps/s of each side and the median of the per-round ratios,
which pairs rounds taken at nearly the same moment.

    python bench/train_throughput.py [--models lenet5,resnet18] [--size 32] [--rounds 30]
        [--threads 1 --clock cpu]    # on a shared machine

Writes bench/results/train_throughput.json and prints a Markdown table."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import common
import torch
import torch.nn.functional as F
from handwritten import create
from report import train_throughput as render

import dslc

# name -> (spec file, input channels, whether the spec takes a `size` parameter)
NETS = {"lenet5": ("lenet5.dl", 1, False), "resnet18": ("resnet18.dl", 3, True)}
CLASSES = 10
OPTIMIZER = "SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)"
# wall: what a user waits for. cpu: the process's CPU time, which time slices lost to other
# processes on a shared machine do not inflate (with one thread it is the cleaner measure).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def modules(name: str, args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The generated and the hand-written module, each initialized from seed 0."""
    spec_file, _, sized = NETS[name]
    size = args.size if sized else 32
    params = {"size": size, "classes": CLASSES} if sized else {"classes": CLASSES}
    spec = dslc.load((Path(args.spec_dir) / spec_file).as_posix(), params)
    torch.manual_seed(0)
    generated = spec.torch_module()
    torch.manual_seed(0)
    return generated, create(name, size, CLASSES)


def batches(name: str, size: int, batch: int, count: int = 8) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(1)
    shape = (batch, NETS[name][1], size, size)
    return [
        (torch.randn(shape, generator=gen), torch.randint(0, CLASSES, (batch,), generator=gen))
        for _ in range(count)
    ]


class Trainer:
    """One model, its optimizer and the shared batches; `run(n)` takes n optimizer steps."""

    def __init__(self, model: torch.nn.Module, data: list[tuple[torch.Tensor, ...]], clock) -> None:
        self.model, self.data, self.i, self.clock = model.train(), data, 0, clock
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def run(self, steps: int) -> float:
        """Seconds taken by `steps` steps."""
        start = self.clock()
        for _ in range(steps):
            x, y = self.data[self.i % len(self.data)]
            self.i += 1
            self.opt.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(x), y).backward()
            self.opt.step()
        return self.clock() - start


def steps_per_round(trainers: list[Trainer], warmup: int, round_s: float) -> int:
    """Warm both up, and pick the steps that make a round of one model last about round_s
    (timed after the warm-up: the first steps allocate and are much slower)."""
    for t in trainers:
        t.run(warmup)
    per_step = max(t.run(warmup) / warmup for t in trainers)
    return max(1, round(round_s / per_step))


def race(trainers: list[Trainer], rounds: int, steps: int) -> list[list[float]]:
    """Steps/s of each trainer per round; who goes first alternates from round to round."""
    rates: list[list[float]] = [[] for _ in trainers]
    for r in range(rounds):
        order = range(len(trainers)) if r % 2 == 0 else reversed(range(len(trainers)))
        for i in order:
            rates[i].append(steps / trainers[i].run(steps))
    return rates


def bench_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    generated, hand = modules(name, args)
    count = [sum(p.numel() for p in m.parameters()) for m in (generated, hand)]
    if count[0] != count[1]:
        raise SystemExit(f"{name}: generated {count[0]:,} parameters, hand-written {count[1]:,}")
    size = args.size if NETS[name][2] else 32
    data = batches(name, size, args.batch)
    trainers = [Trainer(m, data, CLOCKS[args.clock]) for m in (generated, hand)]
    steps = steps_per_round(trainers, args.warmup, args.round_s)
    print(f"{name}: {args.rounds} rounds of {steps} steps each...", file=sys.stderr)
    gen_rates, hand_rates = race(trainers, args.rounds, steps)
    ratios = [g / h for g, h in zip(gen_rates, hand_rates, strict=True)]
    return {"size": size, "params": count[0], "steps_per_round": steps,
            "generated": statistics.median(gen_rates), "handwritten": statistics.median(hand_rates),
            "ratio": statistics.median(ratios), "generated_steps_s": gen_rates,
            "handwritten_steps_s": hand_rates}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(NETS), help=f"of {','.join(NETS)}")
    parser.add_argument("--size", type=int, default=32, help="ResNet-18's input height, width")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--round-s", type=float, default=0.5, help="seconds per model per round")
    parser.add_argument("--warmup", type=int, default=5, help="steps per model before timing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's own)")
    parser.add_argument("--clock", choices=CLOCKS, default="wall", help="what time to count")
    parser.add_argument("--spec-dir", default="specs", help="where the .dl files are")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data: dict[str, Any] = {"machine": common.machine(), "batch": args.batch, "rounds": args.rounds,
                            "optimizer": OPTIMIZER, "threads": torch.get_num_threads(),
                            "clock": args.clock, "results": {}}  # fmt: skip
    for name in args.models.split(","):
        data["results"][name] = bench_one(name, args)
    print(f"wrote {common.write_json('train_throughput', data).relative_to(common.ROOT)}")
    print(render(data))


if __name__ == "__main__":
    main()
