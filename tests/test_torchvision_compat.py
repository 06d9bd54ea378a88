"""specs/resnet18.dl, resnet50.dl and vgg16.dl build torchvision's networks with torchvision's
names: the generated module's state_dict has exactly the keys and shapes of torchvision's
(tests/golden/torchvision/*.keys, written by tests/reference.py from torchvision 0.28.0's
`torchvision.models.<name>(weights=None).state_dict()`), so torchvision's weights load with
strict=True and the two networks then compute the same outputs."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT
from reference import state_dict_keys, torchvision_models

import dslc

NETWORKS = ["resnet18", "resnet50", "vgg16"]


def _module(name: str):
    torch.manual_seed(0)
    return dslc.load(ROOT / "specs" / f"{name}.dl", {"size": 32}).torch_module()


@pytest.mark.parametrize("name", NETWORKS)
def test_state_dict_keys_equal_torchvisions(name: str) -> None:
    golden = (ROOT / "tests" / "golden" / "torchvision" / f"{name}.keys").read_text()
    expected = [line for line in golden.splitlines() if not line.startswith("#")]
    assert state_dict_keys(_module(name)).splitlines() == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", NETWORKS)
def test_torchvision_weights_load_strictly_and_agree(name: str) -> None:
    models = torchvision_models()
    torch.manual_seed(1)
    theirs = getattr(models, name)(weights=None).eval()
    with torch.no_grad():  # batch-norm statistics that are not the identity
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    ours = _module(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    scale = max(1.0, float(want.abs().max()))
    assert torch.allclose(got, want, atol=1e-5 * scale, rtol=0), float((got - want).abs().max())


# The mobile and ConvNeXt networks (issue 12). MobileNetV2 has torchvision's keys exactly;
# EfficientNet-B0 has them but for torchvision's `block`, a reserved word of the language,
# which it calls `layers`; ConvNeXt-T's blocks name their layers after the paper (dwconv, norm,
# pwconv1, pwconv2) where torchvision numbers an nn.Sequential named `block` that holds Permute
# modules (specs/convnext_tiny.dl says why). Weights are copied by order, with equal shapes.
MODERN = {
    "mobilenet_v2": (3_504_872, {}),
    "efficientnet_b0": (5_288_548, {".block.": ".layers."}),
    "convnext_tiny": (28_589_128, None),  # None: the keys differ, shapes and order agree
}


def _randomized(model: torch.nn.Module, gen: torch.Generator) -> torch.nn.Module:
    """Non-trivial batch-norm statistics, norm affines and layer scales (eval mode)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.2, generator=gen)
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):  # 1e-6 would hide the blocks' branches
                p.uniform_(0.5, 1.5, generator=gen)
    return model.eval()


@pytest.mark.parametrize("name", list(MODERN))
def test_modern_networks_equal_torchvisions(name: str) -> None:
    count, renames = MODERN[name]
    models = torchvision_models()
    torch.manual_seed(1)
    theirs = _randomized(getattr(models, name)(weights=None), torch.Generator().manual_seed(3))
    ours = _module(name).eval()
    assert sum(p.numel() for p in ours.parameters()) == count
    assert sum(p.numel() for p in theirs.parameters()) == count
    state, mine = theirs.state_dict(), ours.state_dict()
    if renames is not None:
        renamed = list(state)
        for old, new in renames.items():
            renamed = [k.replace(old, new) for k in renamed]
        assert renamed == list(mine)
    assert [v.shape for v in state.values()] == [v.shape for v in mine.values()]
    ours.load_state_dict(dict(zip(mine, state.values(), strict=True)), strict=True)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    assert float(want.std()) > 0.1  # the outputs depend on the input, not only on biases
    scale = max(1.0, float(want.abs().max()))
    assert torch.allclose(got, want, atol=1e-5 * scale, rtol=0), float((got - want).abs().max())
