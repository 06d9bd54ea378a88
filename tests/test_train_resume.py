"""Interrupted runs resume exactly: a run killed with SIGKILL mid-epoch, or stopped with SIGTERM,
then resumed, ends with weights identical (torch.equal) to a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file
from test_train_data import (
    one_thread,  # noqa: F401  (autouse: one torch thread)
    write_tiny,
)

from dslc.cli import main
from dslc.runtime.train.loop import STEP_SLEEP_ENV

# dropout makes the torch RNG state part of what a resume must restore
SPEC = """
model Drop {
    input x: f32[N, 4]
    output logits = x -> linear(16) -> relu -> dropout(0.2) -> linear(3)
}

train {
    target y: i64[N]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr=0.01)
    batch_size = 8
    epochs = 3
}
"""


def start(tmp_path, *extra: str, sleep: float) -> subprocess.Popen:
    args = ["train", str(tmp_path / "tiny.dl"), "--data", str(tmp_path / "train.npz")]
    args += ["--val", str(tmp_path / "val.npz"), "--out", str(tmp_path / "run"), *extra]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        STEP_SLEEP_ENV: str(sleep),
        "OMP_NUM_THREADS": "1",
    }
    log = (tmp_path / "stderr.txt").open("w")
    return subprocess.Popen([sys.executable, "-m", "dslc", *args], env=env, stderr=log)


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            pytest.fail(f"the run ended or hung before {what} (exit {proc.returncode})")
        time.sleep(0.01)


def position(tmp_path) -> dict:
    path = tmp_path / "run" / "trainer.pt"
    if not path.exists():
        return {"epoch": 0, "step": 0, "global_step": 0}
    return torch.load(path, weights_only=True)["position"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its final weights and metrics."""
    tmp = tmp_path_factory.mktemp("reference")
    spec, train, val = write_tiny(tmp, SPEC)
    assert main(["train", spec, "--data", train, "--val", val, "--out", str(tmp / "run")]) == 0
    return load_file(tmp / "run" / "last.safetensors"), metrics(tmp)


def metrics(tmp_path) -> list[dict]:
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(r).items() if k != "seconds"} for r in rows]


def resume(tmp_path) -> None:
    args = ["train", str(tmp_path / "tiny.dl"), "--data", str(tmp_path / "train.npz")]
    args += ["--val", str(tmp_path / "val.npz"), "--out", str(tmp_path / "run"), "--resume"]
    assert main(args) == 0


def assert_same_run(tmp_path, reference) -> None:
    weights, rows = reference
    resumed = load_file(tmp_path / "run" / "last.safetensors")
    assert resumed.keys() == weights.keys()
    for k in weights:
        assert torch.equal(resumed[k], weights[k]), k
    assert metrics(tmp_path) == rows  # losses too: the epoch's running sums were restored


def test_resume_after_sigkill_mid_epoch_is_exact(tmp_path, reference):
    """Killed in the second epoch, whose shuffling order depends on the generator's state."""
    write_tiny(tmp_path, SPEC)
    proc = start(tmp_path, "--checkpoint-every", "11", sleep=0.1)
    wait_for(lambda: position(tmp_path)["global_step"] >= 11, proc, "the step-11 checkpoint")
    time.sleep(0.15)  # a step or two past the checkpoint: work that is lost and redone
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    pos = position(tmp_path)
    assert pos["epoch"] == 1 and pos["step"] == 3  # mid-epoch (8 steps per epoch)
    resume(tmp_path)
    assert_same_run(tmp_path, reference)


def test_sigterm_stops_at_a_step_with_a_checkpoint(tmp_path, reference):
    write_tiny(tmp_path, SPEC)
    proc = start(tmp_path, sleep=0.1)
    log = tmp_path / "stderr.txt"
    wait_for(lambda: "training Drop" in log.read_text(), proc, "training started")
    time.sleep(0.35)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert "stopped by signal 15" in log.read_text() and "--resume" in log.read_text()
    pos = position(tmp_path)
    assert pos["epoch"] == 0 and 0 < pos["step"] < 8
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no epoch finished
    resume(tmp_path)
    assert_same_run(tmp_path, reference)
