"""Faster R-CNN's backbone (std.detection, specs/resnet50_fpn.dl) against torchvision's
BackboneWithFPN: fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).backbone, and
resnet_fpn_backbone("resnet18") with trainable batch norm for the small variant. The parameter
counts are equal; the state_dict keys are equal up to the pyramid's two lists (torchvision's
fpn.inner_blocks.i.0 and fpn.layer_blocks.i.0 are fpn.inner_blocks_i and fpn.layer_blocks_i
here: TORCHVISION_KEY); and with torchvision's weights loaded through that mapping, all five
pyramid levels agree in eval mode. No C++ kernel of torchvision runs: its backbone and pyramid
are pure Python (convolutions, F.interpolate, F.max_pool2d)."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from conftest import ROOT
from reference import torchvision_models

import dslc

LEVELS = ("p2", "p3", "p4", "p5", "p6")
SMALL = """import std.detection
model M(size: int = 64) {
    input image: f32[N, 3, size, size]
    p2, p3, p4, p5, p6 = image -> ResNet18FpnBackbone as backbone
    output p2
    output p3
    output p4
    output p5
    output p6
}
"""


def torchvision_key(key: str) -> str:
    """Our state_dict key as torchvision's BackboneWithFPN names it."""
    return re.sub(r"fpn\.(inner|layer)_blocks_(\d+)\.", r"fpn.\1_blocks.\2.0.", key)


def resnet50_fpn(size: int = 64) -> dslc.Spec:
    return dslc.load(ROOT / "specs" / "resnet50_fpn.dl", {"size": size})


def resnet18_fpn() -> dslc.Spec:
    return dslc.compile_source(SMALL, "<test>")


def theirs(depth: int) -> torch.nn.Module:
    """torchvision's backbone as its detector builds it without pretrained weights: every
    layer trainable, nn.BatchNorm2d (not frozen)."""
    torchvision_models()
    from torchvision.models.detection import fasterrcnn_resnet50_fpn
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    torch.manual_seed(0)
    if depth == 50:
        return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).backbone
    return resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, norm_layer=torch.nn.BatchNorm2d, trainable_layers=5
    )


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomized(module: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial batch-norm statistics and affines, and non-zero FPN biases; eval mode."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.2, generator=gen)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0.0, 0.1, generator=gen)
    return module.eval()


@pytest.mark.parametrize(("depth", "params"), [(50, 26_852_416), (18, 13_783_616)])
def test_parameter_counts_equal_torchvisions(depth: int, params: int) -> None:
    spec = resnet50_fpn() if depth == 50 else resnet18_fpn()
    assert spec.param_count == count(spec.torch_module()) == params
    assert count(theirs(depth)) == params


@pytest.mark.parametrize("depth", [50, 18])
def test_state_dict_keys_are_torchvisions_up_to_the_pyramids_lists(depth: int) -> None:
    ours = (resnet50_fpn() if depth == 50 else resnet18_fpn()).torch_module().state_dict()
    reference = theirs(depth).state_dict()
    mapped = {torchvision_key(k.removeprefix("backbone.")): v.shape for k, v in ours.items()}
    assert mapped == {k: v.shape for k, v in reference.items()}
    assert list(mapped) == list(reference)  # the same order, too
    changed = sorted(k for k in ours if torchvision_key(k) != k)
    assert len(changed) == 16 and all(".fpn." in k for k in changed), changed


@pytest.mark.parametrize("depth", [50, 18])
def test_outputs_equal_torchvisions_under_its_weights(depth: int) -> None:
    reference = randomized(theirs(depth))
    spec = resnet50_fpn() if depth == 50 else resnet18_fpn()
    ours = spec.torch_module().eval()
    state = reference.state_dict()
    ours.load_state_dict(
        {k: state[torchvision_key(k.removeprefix("backbone."))] for k in ours.state_dict()},
        strict=True,
    )
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = reference(x), ours(x)
    assert list(want) == ["0", "1", "2", "3", "pool"]
    for level, w, g in zip(LEVELS, want.values(), got, strict=True):
        assert g.shape == w.shape, level
        scale = max(1.0, float(w.abs().max()))
        assert torch.allclose(g, w, rtol=0, atol=1e-5 * scale), (level, float((g - w).abs().max()))


def test_the_pyramid_starts_as_torchvisions() -> None:
    """kaiming_uniform_(a=1): U(-sqrt(3 / fan_in), sqrt(3 / fan_in)), bias 0; the body's
    batch norms at 1 and 0."""
    torch.manual_seed(0)
    model = resnet18_fpn().torch_module()
    for name, p in model.state_dict().items():
        if ".fpn." in name and name.endswith("weight"):
            bound = (3.0 / (p.shape[1] * p.shape[2] * p.shape[3])) ** 0.5
            assert float(p.abs().max()) <= bound, name
            assert float(p.abs().max()) > 0.9 * bound, name  # and not a narrower distribution
        elif ".fpn." in name:
            assert not p.any(), name
        elif ".bn" in name and name.endswith(("weight", "bias")):
            assert (p == float(name.endswith("weight"))).all(), name


UPSAMPLE = """model M {{
    input top: f32[N, 4, {h}, {w}]
    input lateral: f32[N, 4, {H}, {W}]
    output y = top -> upsample(like=lateral{mode})
}}
"""


@pytest.mark.parametrize(
    ("sizes", "mode"),
    [((2, 3, 4, 6), ""), ((5, 7, 9, 8), ""), ((5, 7, 9, 8), ', mode="bilinear"')],
)
def test_upsample_to_the_size_of_another_tensor(sizes, mode) -> None:
    """upsample(like=t) is F.interpolate(x, size=t.shape[-2:]), in PyTorch and onnxruntime,
    at sizes that are not a multiple of each other too (nearest rounds as PyTorch does)."""
    h, w, big_h, big_w = sizes
    spec = dslc.compile_source(UPSAMPLE.format(h=h, w=w, H=big_h, W=big_w, mode=mode), "<t>")
    assert "size=lateral.shape[-2:]" in spec.torch_source()
    model = spec.torch_module().eval()
    sess = ort.InferenceSession(
        spec.onnx_model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    for batch in (1, 3, 7):
        top = rng.standard_normal((batch, 4, h, w), dtype=np.float32)
        lateral = rng.standard_normal((batch, 4, big_h, big_w), dtype=np.float32)
        interp = "nearest" if not mode else "bilinear"
        want = F.interpolate(torch.from_numpy(top), size=(big_h, big_w), mode=interp)
        with torch.no_grad():
            got = model(torch.from_numpy(top), torch.from_numpy(lateral))
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        (onnx_out,) = sess.run(None, {"top": top, "lateral": lateral})
        np.testing.assert_allclose(onnx_out, want.numpy(), rtol=0, atol=1e-5)


def test_upsample_like_with_symbolic_sizes_needs_a_linear_mode() -> None:
    source = """model M {
    input top: f32[N, 4, H, W]
    input lateral: f32[N, 4, S, T]
    output y = top -> upsample(like=lateral)
}
"""
    with pytest.raises(dslc.CompileError, match="needs known spatial sizes"):
        dslc.compile_source(source, "<t>")
    spec = dslc.compile_source(source.replace("like=lateral", 'like=lateral, mode="bilinear"'))
    sess = ort.InferenceSession(
        spec.onnx_model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    top = np.random.default_rng(1).standard_normal((3, 4, 3, 5), dtype=np.float32)
    lateral = np.zeros((3, 4, 7, 6), np.float32)
    want = F.interpolate(torch.from_numpy(top), size=(7, 6), mode="bilinear")
    (got,) = sess.run(None, {"top": top, "lateral": lateral})
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("upsample(2, like=lateral)", "one of scale_factor, size and like"),
        ("upsample(like=flat)", "like must have the rank of the input"),
    ],
)
def test_upsample_like_errors(call: str, message: str) -> None:
    source = f"""model M {{
    input top: f32[N, 4, 2, 2]
    input lateral: f32[N, 4, 4, 4]
    input flat: f32[N, 4]
    output y = top -> {call}
}}
"""
    with pytest.raises(dslc.CompileError, match=message):
        dslc.compile_source(source, "<t>")
