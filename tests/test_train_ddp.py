"""Data parallel training under torchrun: two processes on loopback (gloo) end with the same
weights as one process with the same global batch; and the per-rank loss weighting that makes
it so, for batch-mean and batch-sum losses and penalties, checked without processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file
from test_train_data import (
    TINY,
    one_thread,  # noqa: F401  (autouse: one torch thread)
    write_tiny,
)

import dslc
from dslc.cli import main
from dslc.runtime.train import data
from dslc.runtime.train.contract import contract
from dslc.runtime.train.distributed import World
from dslc.runtime.train.loop import Settings, Trainer


@pytest.mark.slow  # torchrun and two more processes importing torch: 10-20 s on 2 busy cores
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
def test_two_processes_match_one(tmp_path):
    # 61 examples, batch 8: the last batch of 5 splits 3 + 2, which the loss weighting handles
    spec, train, val = write_tiny(tmp_path, n=61)
    args = ["train", spec, "--data", train, "--val", val, "--epochs", "2"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    torchrun += ["--nproc-per-node=2", "-m", "dslc", *args, "--out", str(tmp_path / "two")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(torchrun, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("training Tiny") == 1 and "2 processes" in r.stderr  # rank 0 talks
    one = load_file(tmp_path / "one" / "last.safetensors")
    two = load_file(tmp_path / "two" / "last.safetensors")
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-6)
    rows = [
        [json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        for d in ("one", "two")
    ]
    assert len(rows[1]) == 2  # rank 0 alone writes the log
    for a, b in zip(*rows, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-6)


@pytest.mark.parametrize(
    "loss",
    [
        "cross_entropy(logits, y) + 0.01 * l2()",  # a batch mean, plus a penalty
        'cross_entropy(logits, y, reduction="sum")',  # a batch sum
    ],
)
@pytest.mark.parametrize("batch", [8, 5])  # 5 splits 3 + 2 across two ranks
def test_rank_objectives_average_to_the_global_gradient(tmp_path, loss, batch):
    """What DDP computes, without processes: the mean over ranks of each rank's gradient of
    Trainer._objective equals the gradient of the loss on the whole global batch."""
    spec = TINY.replace("cross_entropy(logits, y)", loss)
    spec_path, train, _ = write_tiny(tmp_path, spec)
    c = contract(dslc.load(spec_path))
    s = Settings(batch_size=batch, epochs=1, seed=0, out=tmp_path)
    arrays = data.load(train, c.arrays, c.name)
    trainer = Trainer(
        c, s, World(), torch.device("cpu"), data.to_dataset(arrays, c.arrays, ""), None
    )
    params = list(trainer.module.parameters())
    index = torch.arange(batch)

    def grads(world: World) -> list[torch.Tensor]:
        trainer.world = world
        local = world.shard(index)
        loss, penalty, _ = trainer._loss(trainer.module, trainer.train.take(local))
        objective = trainer._objective(loss, penalty, len(local) / batch)
        return torch.autograd.grad(objective, params)

    whole = grads(World())
    ranks = [grads(World(rank, 2)) for rank in (0, 1)]
    for g, g0, g1 in zip(whole, *ranks, strict=True):
        torch.testing.assert_close((g0 + g1) / 2, g, rtol=1e-5, atol=1e-7)
