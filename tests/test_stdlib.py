"""The standard library (dslc/stdlib/, docs/stdlib.md): each block, compiled in a small spec,
has the parameter count of its independent implementation (torchvision's SqueezeExcitation,
BasicBlock, Bottleneck, InvertedResidual, MBConv and CNBlock; torch.nn.TransformerEncoderLayer)
and, with that implementation's weights copied over in order, the same outputs in eval mode.
The PyTorch module and onnxruntime agree on each (batch 1/3/7; T = 1, 7, 64 for sequences)."""

from __future__ import annotations

import functools
import importlib

import numpy as np
import onnxruntime as ort
import pytest
import torch
from reference import torchvision_models

import dslc
from dslc.frontend.imports import library_modules
from dslc.runtime.parity import random_inputs

ATOL = 1e-5
IMAGE = "f32[N, {c}, 8, 8]"


def compiled(imports: str, input_type: str, call: str, extra_inputs: str = "") -> dslc.Spec:
    """A spec whose model is one library block, named `blk`."""
    source = (
        f"import std.{imports}\nmodel M {{\n    input x: {input_type}\n{extra_inputs}"
        f"    output y = {call} as blk\n}}\n"
    )
    return dslc.compile_source(source, "<test>")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def copy_in_order(ours: torch.nn.Module, theirs: torch.nn.Module, first=()) -> None:
    """Copy the reference's state (parameters and batch-norm statistics) into ours, tensor by
    tensor in order; `first` names reference tensors that come first in ours. Shapes must
    agree, up to trailing 1s (a 1x1 convolution's weight against a linear's)."""
    mine = ours.state_dict()
    ref = list(theirs.state_dict().items())
    order = {key: i for i, key in enumerate(first)}
    ref.sort(key=lambda kv: next((order[p] for p in order if kv[0].startswith(p)), len(order)))
    assert len(mine) == len(ref), (list(mine), [k for k, _ in ref])
    for (key, mine_t), (ref_key, ref_t) in zip(mine.items(), ref, strict=True):
        assert mine_t.squeeze().shape == ref_t.squeeze().shape, (key, ref_key)
        mine[key] = ref_t.reshape(mine_t.shape).clone()
    ours.load_state_dict(mine)


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Its default weights plus noise (so that constant inits, a norm's ones or a layer scale
    of 1e-6, cannot hide a mismatch) and non-trivial batch-norm statistics; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.parameters():
            t.add_(torch.randn(t.shape, generator=gen) * 0.1)
        for name, t in module.named_buffers():
            if name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) * 0.5 + 0.5)
    return module.eval()


def agree(spec: dslc.Spec, reference: torch.nn.Module, inputs, first=(), ref_call=None) -> None:
    model = spec.torch_module().eval()
    assert n_params(model) == n_params(reference) == spec.param_count
    copy_in_order(model.blk, randomized(reference), first)
    with torch.no_grad():
        got = model(*inputs)
        expected = (ref_call or reference)(*inputs)
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)


def onnx_agrees(spec: dslc.Spec, sequence: bool = False) -> None:
    torch.manual_seed(0)
    model = randomized(spec.torch_module(), seed=1)
    session = ort.InferenceSession(
        spec.onnx_model(weights=model.state_dict()).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    rng = np.random.default_rng(0)
    for other in (1, 7, 64) if sequence else (8,):
        for batch in (1, 3, 7):
            inputs = random_inputs(spec.graph.inputs, batch, rng, other_dims=other)
            if "mask" in inputs:
                inputs["mask"][:, 0] = True  # every sequence has a token
            with torch.no_grad():
                expected = model(*(torch.from_numpy(a) for a in inputs.values())).numpy()
            (got,) = session.run(None, inputs)
            np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL, err_msg=f"{batch}")


def image(channels: int, batch: int = 3) -> torch.Tensor:
    # large enough that ReLU6 clips
    return 4 * torch.randn(batch, channels, 8, 8, generator=torch.Generator().manual_seed(5))


# ---- vision

VISION = {
    # name: (the block call, input channels, torchvision's class and arguments, first)
    "se": ("SqueezeExcitation(4)", 16, lambda tv: _misc().SqueezeExcitation(16, 4)),
    "basic": ("BasicBlock(16)", 16, lambda tv: tv.resnet.BasicBlock(16, 16)),
    "basic_down": (
        "BasicBlock(32, stride=2)",
        16,
        lambda tv: tv.resnet.BasicBlock(16, 32, 2, downsample=_downsample(16, 32, 2)),
    ),
    "bottleneck": ("Bottleneck(8)", 32, lambda tv: tv.resnet.Bottleneck(32, 8)),
    "bottleneck_down": (
        "Bottleneck(8, stride=2)",
        16,
        lambda tv: tv.resnet.Bottleneck(16, 8, 2, downsample=_downsample(16, 32, 2)),
    ),
    "inverted": (
        "InvertedResidual(16)",
        16,
        lambda tv: tv.mobilenetv2.InvertedResidual(16, 16, 1, 6),
    ),
    "inverted_t1": (
        "InvertedResidual(24, stride=2, expand_ratio=1)",
        16,
        lambda tv: tv.mobilenetv2.InvertedResidual(16, 24, 2, 1),
    ),
    "mbconv": ("MBConv(16, kernel=5)", 16, lambda tv: _mbconv(tv, 6, 5, 1, 16, 16)),
    "mbconv_t1": (
        "MBConv(24, stride=2, expand_ratio=1)",
        16,
        lambda tv: _mbconv(tv, 1, 3, 2, 16, 24),
    ),
    "convnext": ("ConvNeXtBlock()", 16, lambda tv: tv.convnext.CNBlock(16, 1e-6, 0.0)),
}


def _misc():
    return importlib.import_module("torchvision.ops.misc")


def _downsample(cin: int, cout: int, stride: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(cin, cout, 1, stride=stride, bias=False), torch.nn.BatchNorm2d(cout)
    )


def _mbconv(tv, expand: int, kernel: int, stride: int, cin: int, cout: int) -> torch.nn.Module:
    config = tv.efficientnet.MBConvConfig(expand, kernel, stride, cin, cout, 1, 1.0, 1.0)
    return tv.efficientnet.MBConv(config, 0.0, functools.partial(torch.nn.BatchNorm2d))


@pytest.mark.parametrize("case", list(VISION))
def test_vision_block_equals_torchvision(case: str) -> None:
    call, channels, make = VISION[case]
    spec = compiled("vision", IMAGE.format(c=channels), f"x -> {call}")
    reference = make(torchvision_models())
    agree(spec, reference, (image(channels),))


@pytest.mark.parametrize("case", ["se", "basic_down", "inverted_t1", "mbconv", "convnext"])
def test_vision_block_onnx_parity(case: str) -> None:
    call, channels, _ = VISION[case]
    onnx_agrees(compiled("vision", IMAGE.format(c=channels), f"x -> {call}"))


def test_basic_block_takes_a_torchvision_state_dict_as_it_is() -> None:
    tv = torchvision_models()
    spec = compiled("vision", IMAGE.format(c=16), "x -> BasicBlock(32, stride=2)")
    reference = tv.resnet.BasicBlock(16, 32, 2, downsample=_downsample(16, 32, 2))
    spec.torch_module().blk.load_state_dict(reference.state_dict(), strict=True)


def test_the_residual_is_taken_only_when_the_shape_allows() -> None:
    kept = compiled("vision", IMAGE.format(c=16), "x -> InvertedResidual(16)")
    dropped = compiled("vision", IMAGE.format(c=16), "x -> InvertedResidual(16, stride=2)")
    assert "y = x + h" in kept.torch_source()
    assert "x + h" not in dropped.torch_source()


# ---- transformer

WIDTH, HEADS, FFN = 16, 4, 32
SEQUENCE = f"f32[N, T, {WIDTH}]"
# our layers' order of tensors against torch's: attention, then the norms where they are
POST = ("self_attn", "norm1", "linear1", "linear2", "norm2")
PRE = ("norm1", "self_attn", "norm2", "linear1", "linear2")


def torch_layer(norm_first: bool) -> torch.nn.TransformerEncoderLayer:
    return torch.nn.TransformerEncoderLayer(
        WIDTH, HEADS, FFN, dropout=0.1, activation="gelu", batch_first=True, norm_first=norm_first
    )


def sequence(batch: int, t: int) -> torch.Tensor:
    return torch.randn(batch, t, WIDTH, generator=torch.Generator().manual_seed(t))


@pytest.mark.parametrize(
    ("block", "norm_first"), [("EncoderLayer", False), ("PreNormEncoderLayer", True)]
)
@pytest.mark.parametrize("t", [1, 7, 64])
def test_encoder_layer_equals_torch(block: str, norm_first: bool, t: int) -> None:
    spec = compiled("transformer", SEQUENCE, f"x -> {block}({WIDTH}, {HEADS}, {FFN})")
    agree(spec, torch_layer(norm_first), (sequence(3, t),), PRE if norm_first else POST)


def test_causal_encoder_layer_equals_torch_with_a_causal_mask() -> None:
    spec = compiled(
        "transformer", SEQUENCE, f"x -> PreNormEncoderLayer({WIDTH}, {HEADS}, {FFN}, causal=true)"
    )
    reference = torch_layer(True)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(7)
    agree(
        spec,
        reference,
        (sequence(3, 7),),
        PRE,
        lambda x: reference(x, src_mask=causal, is_causal=True),
    )


def test_masked_encoder_layer_equals_torch_on_the_real_tokens() -> None:
    spec = compiled(
        "transformer",
        SEQUENCE,
        f"x -> MaskedEncoderLayer({WIDTH}, {HEADS}, {FFN}, mask=mask)",
        "    input mask: bool[N, T]\n",
    )
    model = spec.torch_module().eval()
    reference = randomized(torch_layer(False))
    copy_in_order(model.blk, reference, POST)
    x = sequence(3, 7)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 1:] = False
    with torch.no_grad():
        got = model(x, mask)
        expected = reference(x, src_key_padding_mask=~mask)
    # torch's fast path leaves the padded positions zero; the real tokens must agree
    torch.testing.assert_close(got[mask], expected[mask], rtol=0, atol=ATOL)


@pytest.mark.parametrize("block", ["EncoderLayer", "PreNormEncoderLayer"])
def test_encoder_layer_onnx_parity(block: str) -> None:
    onnx_agrees(compiled("transformer", SEQUENCE, f"x -> {block}({WIDTH}, {HEADS}, {FFN})"), True)


def test_masked_encoder_layer_onnx_parity() -> None:
    spec = compiled(
        "transformer",
        SEQUENCE,
        f"x -> MaskedEncoderLayer({WIDTH}, {HEADS}, {FFN}, mask=mask)",
        "    input mask: bool[N, T]\n",
    )
    onnx_agrees(spec, True)


DECODER = f"x -> DecoderLayer({WIDTH}, {HEADS}, {FFN}, memory=memory)"
MEMORY = f"    input memory: f32[N, S, {WIDTH}]\n"


def copy_decoder(ours: torch.nn.Module, theirs: torch.nn.TransformerDecoderLayer) -> None:
    """torch's decoder layer into ours: its cross-attention's in_proj is our q (the first
    third) and kv (the rest); everything else has the same shape, in our order."""
    ref = theirs.state_dict()
    cross = "multihead_attn."
    w, b = ref.pop(cross + "in_proj_weight"), ref.pop(cross + "in_proj_bias")
    parts = {"q.weight": w[:WIDTH], "q.bias": b[:WIDTH], "kv.weight": w[WIDTH:]}
    parts |= {"kv.bias": b[WIDTH:]}
    order = ["self_attn.", "norm1.", cross, "norm2.", "linear1.", "linear2.", "norm3."]
    rest = sorted(
        ref.items(), key=lambda kv: next(i for i, p in enumerate(order) if kv[0].startswith(p))
    )
    mine = ours.state_dict()
    queue = iter(rest)
    for key in mine:
        local = key.removeprefix(cross)
        value = parts[local] if key.startswith(cross) and local in parts else next(queue)[1]
        assert mine[key].shape == value.shape, key
        mine[key] = value.clone()
    ours.load_state_dict(mine)


@pytest.mark.parametrize(("t", "s"), [(1, 7), (7, 1), (7, 64)])
def test_decoder_layer_equals_torch(t: int, s: int) -> None:
    spec = compiled("transformer", SEQUENCE, DECODER, MEMORY)
    model = spec.torch_module().eval()
    reference = randomized(
        torch.nn.TransformerDecoderLayer(
            WIDTH, HEADS, FFN, dropout=0.1, activation="gelu", batch_first=True
        )
    )
    assert n_params(model) == n_params(reference) == spec.param_count
    copy_decoder(model.blk, reference)
    x = sequence(3, t)
    memory = torch.randn(3, s, WIDTH, generator=torch.Generator().manual_seed(s + 1))
    causal = torch.nn.Transformer.generate_square_subsequent_mask(t)
    with torch.no_grad():
        got = model(x, memory)
        expected = reference(x, memory, tgt_mask=causal, tgt_is_causal=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)


def test_decoder_layer_onnx_parity() -> None:
    onnx_agrees(compiled("transformer", SEQUENCE, DECODER, MEMORY), True)


# ---- the library as a whole


@pytest.mark.parametrize("module", library_modules())
def test_every_block_of_the_library_is_tested_here(module: str) -> None:
    from dslc.frontend.imports import STDLIB

    text = (STDLIB / f"{module.removeprefix('std.')}.dl").read_text()
    blocks = [
        line.split()[1].split("(")[0] for line in text.splitlines() if line.startswith("block ")
    ]
    calls = (
        " ".join(c for c, _, _ in VISION.values())
        + " EncoderLayer PreNormEncoderLayer MaskedEncoderLayer DecoderLayer"
        # std.detection: against torchvision's BackboneWithFPN in test_detection_backbone.py
        + " ResNet50Body ResNet18Body FeaturePyramid ResNet50FpnBackbone ResNet18FpnBackbone"
        # and its heads, inside torchvision's whole Faster R-CNN in test_faster_rcnn.py
        + " TwoMLPHead FastRCNNPredictor"
    )
    assert blocks and all(b + "(" in calls or b in calls.split() for b in blocks), blocks
