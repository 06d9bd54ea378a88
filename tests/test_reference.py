"""torchvision as a reference: its state_dict key lists (tests/golden/torchvision/) and
parameter counts. Skipped where torchvision cannot be imported (tests/reference.py says why
the import may need a stub)."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT, check_golden
from reference import key_file, parameter_count, torchvision_models

# Trainable parameters (buffers excluded), as torchvision's model documentation gives them.
PARAMETERS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "vgg16": 138_357_544}


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_torchvision_keys(name, update_golden):
    check_golden(ROOT / "tests/golden/torchvision" / f"{name}.keys", key_file(name), update_golden)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_torchvision_parameter_count(name):
    models = torchvision_models()
    with torch.device("meta"):
        model = getattr(models, name)(weights=None)
    assert parameter_count(model) == PARAMETERS[name]
