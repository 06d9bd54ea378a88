"""The fine-tuning proof (issue 13): specs/digits_resnet.dl is pretrained with `dslc train` on
the digits 0-5 of scikit-learn's load_digits, then specs/digits_finetune.dl starts from that
checkpoint to learn the digits 6-9 from five images each (a new 4-class head, the stem and first
stage frozen with their batch norms, the second stage at a third of the rate); its validation
accuracy on every other image of 6-9 is compared with the same network trained from scratch on
the same twenty images, with the same epochs (30), batch size (8) and seed. The data is image
folders of PNGs (one subfolder per digit) written by examples/finetune/make_data.py, read by
`dslc train --data DIR`.

Measured (seeds 0, 1, 2; the last epoch's val_accuracy, one thread): fine-tuned 0.878, 0.909,
0.898 (mean 0.895); from scratch 0.811, 0.690, 0.885 (mean 0.795): +0.100 on average, +0.013 at
the least. Training from scratch on twenty images swings from epoch to epoch; the fine-tuned
runs stay within a few points (judged by each run's best epoch, which picks by the validation
set itself, the two were about equal in the .npz version of this test: 0.901 both). About 3
minutes."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import ROOT
from test_train_data import one_thread  # noqa: F401  (autouse: one torch thread)

from dslc.cli import main

pytest.importorskip("sklearn")
SEEDS = (0, 1, 2)
MARGIN = 0.05  # the least mean gain asserted (measured: 0.113)


def _make_data():
    spec = importlib.util.spec_from_file_location(
        "make_data", ROOT / "examples/finetune/make_data.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make


def _last_accuracy(run) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["val_accuracy"]


def _train(spec: str, data, seed: int, out, *extra: str) -> float:
    args = ["train", str(ROOT / "specs" / spec), "--data", str(data / "few")]
    args += ["--val", str(data / "held"), "--seed", str(seed), "--out", str(out)]
    assert main([*args, "--epochs", "30", "--batch-size", "8", *extra]) == 0
    return _last_accuracy(out)


@pytest.mark.slow
def test_fine_tuning_beats_training_from_scratch_on_few_images(tmp_path, capsys):
    make = _make_data()
    make(tmp_path / "data")
    pre = ["train", str(ROOT / "specs/digits_resnet.dl"), "--param", "classes=6"]
    pre += ["--data", str(tmp_path / "data/pre_train")]
    pre += ["--val", str(tmp_path / "data/pre_val"), "--epochs", "8"]
    assert main([*pre, "--out", str(tmp_path / "pre")]) == 0
    start = ["--init-from", str(tmp_path / "pre" / "best.safetensors")]
    gains = []
    for seed in SEEDS:
        data = tmp_path / f"data{seed}"
        make(data, seed=seed, pretrain=False)
        tuned = _train("digits_finetune.dl", data, seed, tmp_path / f"tuned{seed}", *start)
        scratch = _train(
            "digits_resnet.dl", data, seed, tmp_path / f"scratch{seed}", "--param", "classes=4"
        )
        gains.append((tuned, scratch))
    with capsys.disabled():
        print("\nval_accuracy per seed (fine-tuned, from scratch):", gains)
    assert np.mean([a - b for a, b in gains]) >= MARGIN, gains
