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
