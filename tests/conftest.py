"""Shared test set-up: the --update-golden flag, the repository root, the list of specs."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.dl"))

# Model parameters for tests that run a spec: the large networks at a smaller input size (their
# parameter counts do not depend on it), the large transformers at a smaller configuration
# (tests/test_transformer_refs.py compares the same ones with their references). Goldens and
# parameter counts use the spec's defaults.
TEST_PARAMS: dict[str, dict[str, object]] = {
    "bert_base": {
        "vocab": 1000,
        "width": 64,
        "layers": 2,
        "heads": 4,
        "intermediate": 128,
        "pooler": True,
    },
    "convnext_tiny": {"size": 32},
    "efficientnet_b0": {"size": 16},
    "faster_rcnn": {"size": 128},
    "googlenet": {"size": 64},
    "gpt2_small": {"layers": 2},
    "mobilenet_v2": {"size": 16},
    "resnet18": {"size": 64},
    "resnet50": {"size": 64},
    "resnet50_fpn": {"size": 64},
    "vgg16": {"size": 32},
    "vit_b_16": {
        "image_size": 32,
        "patch_size": 8,
        "num_layers": 2,
        "num_heads": 4,
        "hidden_dim": 64,
        "mlp_dim": 128,
        "num_classes": 10,
    },
}


def params_for(path: Path) -> dict[str, object]:
    return TEST_PARAMS.get(path.stem, {})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite the expected files under tests/golden and tests/errors instead of comparing",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def check_golden(path: Path, actual: str, update: bool) -> None:
    """Compare `actual` with the expected file, or rewrite it under --update-golden."""
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    if not path.exists():
        pytest.fail(
            f"{path.relative_to(ROOT)} is missing; run pytest --update-golden and read the diff"
        )
    expected = path.read_text()
    if actual != expected:
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            f"{path.relative_to(ROOT)} (expected)",
            "actual",
        )
        pytest.fail("golden mismatch (pytest --update-golden rewrites it):\n" + "".join(diff))


# A small language model trained once per session on the repository's docs (test_train_text.py
# checks the run, test_generate.py generates from it): tiny_gpt narrowed to one block of width
# 32, which learns the docs' byte statistics in seconds on one thread.
GPT_PARAMS = ["--param", "width=32", "--param", "layers=1"]


def docs_text(limit: int | None = None) -> str:
    text = "".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))
    return text[:limit] if limit else text


@pytest.fixture(scope="session")
def gpt_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/gpt of `dslc train specs/tiny_gpt.dl --data docs.txt --epochs 3 --export-onnx`."""
    import torch

    from dslc.cli import main

    tmp = tmp_path_factory.mktemp("gpt")
    (tmp / "docs.txt").write_text(docs_text(), encoding="utf-8")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec, data = str(ROOT / "specs/tiny_gpt.dl"), str(tmp / "docs.txt")
        args = ["train", spec, "--data", data, "--out", str(tmp / "run"), "--epochs", "3"]
        code = main([*args, "--export-onnx", *GPT_PARAMS])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    return tmp / "run"
