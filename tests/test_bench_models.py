"""The hand-written baselines of bench/ must be the networks they claim to be: torchvision's
parameter counts, the right output shapes, and the same functions as dslc's specs."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import ROOT
from test_parity import randomize_batch_norm

import dslc

sys.path.insert(0, str(ROOT / "bench"))
import handwritten  # noqa: E402

# torchvision's counts for its 1000-class models (vgg16, googlenet without aux heads, ...).
PARAMS = {
    ("lenet5", 32, 10): 61_706,
    ("vgg16", 224, 1000): 138_357_544,
    ("googlenet", 224, 1000): 6_624_904,
    ("resnet18", 224, 1000): 11_689_512,
    ("resnet50", 224, 1000): 25_557_032,
}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("key", PARAMS, ids=lambda k: k[0])
def test_parameter_counts_match_torchvision(key):
    with torch.device("meta"):  # shapes only: no memory, no initialization time
        model = handwritten.create(*key)
    assert count(model) == PARAMS[key]


@pytest.mark.parametrize("name", ["vgg16", "googlenet", "resnet18", "resnet50"])
def test_small_inputs_give_logits(name):
    """Adaptive pooling lets the ImageNet networks run on small images too."""
    torch.manual_seed(0)
    model = handwritten.create(name, 64, 10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_lenet5_takes_its_input_size():
    model = handwritten.create("lenet5", 64, 10)
    assert model.fc1.in_features == 16 * 13 * 13
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)


def test_downsample_only_where_the_shape_changes():
    """ResNet-18 projects the shortcut in the first block of layers 2-4; ResNet-50 also in
    layer 1, where the bottleneck widens 64 channels to 256."""
    with torch.device("meta"):
        r18, r50 = handwritten.create("resnet18"), handwritten.create("resnet50")
    projected = [b.downsample is not None for layer in (r18.layer1, r18.layer2) for b in layer]
    assert projected == [False, False, True, False]
    assert r50.layer1[0].downsample is not None
    assert r50.layer2[0].conv2.stride == (2, 2) and r50.layer2[0].conv1.stride == (1, 1)


# network -> (input channels, spec parameters): small inputs keep the test quick.
SPECS = {
    "lenet5": (1, {"classes": 10}),
    "vgg16": (3, {"size": 32, "classes": 10}),
    "googlenet": (3, {"size": 64, "classes": 10}),
    "resnet18": (3, {"size": 64, "classes": 10}),
    "resnet50": (3, {"size": 64, "classes": 10}),
}


@pytest.mark.parametrize("name", SPECS)
def test_hand_written_network_computes_what_the_spec_computes(name):
    """With the generated module's weights copied in (parameters and buffers in the same order)
    and trained-looking batch norm statistics, the hand-written network gives the same logits
    in eval mode: the two sides of the benchmarks are one network."""
    path = ROOT / "specs" / f"{name}.dl"
    if not path.exists():
        pytest.skip(f"no specs/{name}.dl on this branch yet")
    channels, params = SPECS[name]
    torch.manual_seed(0)
    generated = dslc.load(path, params).torch_module().eval()
    hand = handwritten.create(name, params.get("size", 32), 10).eval()
    randomize_batch_norm(generated, torch.Generator().manual_seed(1))
    values = list(generated.state_dict().values())
    shapes = [tuple(v.shape) for v in hand.state_dict().values()]
    assert [tuple(v.shape) for v in values] == shapes, "the layers differ"
    hand.load_state_dict(dict(zip(hand.state_dict(), values, strict=True)))
    x = torch.randn(2, channels, params.get("size", 32), params.get("size", 32))
    with torch.no_grad():
        torch.testing.assert_close(hand(x), generated(x), rtol=1e-4, atol=1e-5)


def test_docs_show_the_recorded_results(tmp_path):
    """docs/benchmarks.md holds the tables that bench/report.py renders from bench/results/:
    rewriting them from the JSON changes nothing."""
    import report

    docs = tmp_path / "benchmarks.md"
    docs.write_text(report.DOCS.read_text())
    report.update_docs(docs)
    assert docs.read_text() == report.DOCS.read_text(), "run python bench/report.py"


def test_report_replaces_only_between_its_markers(tmp_path):
    import report

    docs = tmp_path / "benchmarks.md"
    docs.write_text("before\n<!-- begin onnx_cnn -->\nold\n<!-- end onnx_cnn -->\nafter\n")
    if not (report.ROOT / "bench/results/onnx_cnn.json").exists():
        pytest.skip("no recorded onnx_cnn result")
    assert report.update_docs(docs) == ["onnx_cnn"]
    text = docs.read_text()
    assert text.startswith("before\n<!-- begin onnx_cnn -->\nTaken ")
    assert text.endswith("\n<!-- end onnx_cnn -->\nafter\n") and "old" not in text
