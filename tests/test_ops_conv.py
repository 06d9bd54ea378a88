"""The convolutional-family ops (adaptive pooling, transposed convolution, group and instance
norm, upsampling, padding, local response norm, identity): their shape rules and both
backends against PyTorch's own functions, over grids of sizes, including the awkward cases
(sizes that do not divide, outputs larger than inputs)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

import dslc
from dslc.ops.init import fans
from dslc.ops.pool import adaptive_windows
from dslc.ops.resize import nearest_indices


def compile_one(body: str, shape: tuple[int, ...]) -> dslc.Spec:
    dims = ", ".join(map(str, shape))
    return dslc.compile_source(f"model M {{ input x: f32[{dims}]  output y = {body} }}")


def run_both(spec: dslc.Spec, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The generated PyTorch module (eval, seed 0) and onnxruntime on the same input."""
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    onnx_model = spec.onnx_model(weights=model.state_dict())
    session = ort.InferenceSession(
        onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return expected, session.run(None, {"x": x})[0]


def random(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def check_against(body: str, x: np.ndarray, reference: torch.Tensor) -> None:
    """The op's declared type, its PyTorch code and its ONNX graph all equal `reference`."""
    spec = compile_one(body, x.shape)
    declared = tuple(spec.graph.outputs["y"].type.shape)
    assert declared == tuple(reference.shape), f"{body}: shape rule says {declared}"
    got_torch, got_onnx = run_both(spec, x)
    np.testing.assert_allclose(got_torch, reference.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_onnx, reference.numpy(), rtol=0, atol=1e-5)


# ---- adaptive average pooling


def test_adaptive_windows_follow_pytorch_rule():
    # 49 frames into 4: ceil/floor bounds make neighbouring windows share a frame
    assert adaptive_windows(49, 4) == [(0, 13), (12, 25), (24, 37), (36, 49)]
    # more outputs than inputs: windows repeat elements
    assert adaptive_windows(2, 5) == [(0, 1), (0, 1), (0, 2), (1, 2), (1, 2)]


@pytest.mark.parametrize(
    ("shape", "out"),
    [
        ((2, 3, 10), (5,)),  # divides: AveragePool
        ((2, 3, 10), (3,)),  # does not divide
        ((2, 3, 4), (7,)),  # larger than the input
        ((2, 3, 13, 9), (7, 4)),
        ((2, 3, 14, 14), (7, 7)),
        ((1, 2, 5, 6), (1, 1)),  # GlobalAveragePool
        ((1, 2, 3, 3), (6, 2)),
        ((2, 2, 5, 6, 7), (2, 3, 9)),
        ((1, 2, 4, 4, 4), (2, 2, 2)),
        ((2, 3, 6, 6), (6, 6)),  # already that size: no node
    ],
)
def test_adaptive_avg_pool_matches_pytorch(shape, out):
    n = len(out)
    x = random(shape)
    fn = getattr(F, f"adaptive_avg_pool{n}d")
    check_against(f"x -> adaptive_avg_pool{n}d({list(out)})", x, fn(torch.from_numpy(x), out))


def test_adaptive_avg_pool_to_one_takes_symbolic_sizes():
    spec = dslc.compile_source(
        "model M { input x: f32[N, 3, H, W]  output y = x -> adaptive_avg_pool2d(1) }"
    )
    assert str(spec.graph.outputs["y"].type) == "f32[N, 3, 1, 1]"


def test_adaptive_avg_pool_needs_known_sizes_otherwise():
    with pytest.raises(dslc.CompileError, match="adaptive_avg_pool2d to 7 needs known spatial"):
        dslc.compile_source(
            "model M { input x: f32[N, 3, H, W]  output y = x -> adaptive_avg_pool2d(7) }"
        )


def test_adaptive_avg_pool_output_size_per_dim():
    with pytest.raises(dslc.CompileError, match="output_size has 2 values but the input has 3"):
        compile_one("x -> adaptive_avg_pool3d([2, 2])", (1, 1, 4, 4, 4))


def test_alexnet_at_full_size_has_torchvisions_parameter_count():
    params = {"size": 224, "width": 64, "hidden": 4096, "classes": 1000, "lrn": False}
    spec = dslc.load(ROOT / "specs/alexnet.dl", params=params)
    assert spec.param_count == 61_100_840  # torchvision.models.alexnet()
    (pool,) = [n for n in spec.graph.nodes if n.op.name == "adaptive_avg_pool2d"]
    assert str(pool.inputs[0].type) == "f32[N, 256, 6, 6]"  # already 6x6 at 224: a no-op
    assert str(pool.output.type) == "f32[N, 256, 6, 6]"


# ---- transposed convolution

TRANSPOSED_GRID = [
    # (length, kernel, stride, padding, output_padding, dilation)
    (L, k, s, p, op, d)
    for L in (1, 5, 8)
    for k in (1, 3, 4)
    for s in (1, 2, 3)
    for p in (0, 1)
    for d in (1, 2)
    for op in range(max(s, d))
    if (L - 1) * s - 2 * p + d * (k - 1) + op + 1 > 0
]


def test_conv_transpose_shape_rule_matches_pytorch():
    for L, k, s, p, op, d in TRANSPOSED_GRID:
        body = f"x -> conv_transpose1d(2, {k}, {s}, {p}, {op}, {d})"
        declared = compile_one(body, (1, 3, L)).graph.outputs["y"].type.shape
        layer = torch.nn.ConvTranspose1d(3, 2, k, s, p, op, dilation=d)
        assert declared[2] == layer(torch.zeros(1, 3, L)).shape[2], body


@pytest.mark.parametrize(
    ("shape", "args"),
    [
        ((2, 4, 7, 7), "8, 3, stride=2, padding=1, output_size=14"),
        ((2, 4, 9), "6, 4, stride=3, padding=2, output_padding=2, groups=2"),
        ((1, 2, 3, 4, 5), "4, [2, 3, 2], stride=[2, 1, 3], dilation=[1, 2, 1], bias=false"),
        ((3, 6, 5, 4), "6, 3, stride=2, dilation=2, output_padding=1, groups=3"),
    ],
)
def test_conv_transpose_matches_pytorch(shape, args):
    n = len(shape) - 2
    spec = compile_one(f"x -> conv_transpose{n}d({args})", shape)
    x = random(shape)
    torch.manual_seed(0)
    layer = spec.torch_module().deconv1
    assert isinstance(layer, getattr(torch.nn, f"ConvTranspose{n}d"))
    with torch.no_grad():
        reference = layer(torch.from_numpy(x))
    check_against(f"x -> conv_transpose{n}d({args})", x, reference)


def test_conv_transpose_output_size_sets_output_padding():
    spec = compile_one(
        "x -> conv_transpose2d(1, 3, stride=2, padding=1, output_size=14)", (1, 1, 7, 7)
    )
    node = spec.graph.nodes[0]
    assert node.attrs["output_padding"] == (1, 1)
    assert "output_padding=1" in spec.torch_source()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            "1, 3, stride=2, padding=1, output_size=28",
            "conv_transpose2d cannot produce 28 from 7 with kernel 3, stride 2, padding 1: "
            "it can produce 13 or 14",
        ),
        ("1, 3, output_size=[9, 10]", "cannot produce 10 from 7 .*: it can produce only 9\\n"),
        ("1, 3, stride=2, output_padding=2", "output_padding 2 must be smaller than the stride"),
        ("1, 3, output_padding=1, output_size=10", "give output_size or output_padding, not both"),
        ("3, 3, groups=2", "groups=2 must divide the input \\(1\\)"),
        ("1, 1, padding=4", "input size 7 with padding 4 gives an empty output"),
    ],
)
def test_conv_transpose_errors(args, message):
    with pytest.raises(dslc.CompileError, match=message):
        compile_one(f"x -> conv_transpose2d({args})", (1, 1, 7, 7))


def test_conv_transpose_parameters_initialize_like_pytorch():
    spec = compile_one("x -> conv_transpose2d(6, [3, 2], groups=2)", (1, 4, 5, 5))
    node = spec.graph.nodes[0]
    layer = torch.nn.ConvTranspose2d(4, 6, (3, 2), groups=2)
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)
    assert node.params["weight"].shape == tuple(layer.weight.shape) == (4, 3, 3, 2)
    assert fans(node.params["weight"].shape)[0] == fan_in == 18  # dim 1, not dim 0
    assert node.params["bias"].init.fan_in == fan_in


def test_conv_transpose_macs():
    spec = compile_one("x -> conv_transpose2d(6, 3, stride=2, groups=2)", (1, 4, 5, 5))
    node = spec.graph.nodes[0]
    # each of the 4*5*5 input elements meets 6/2 output channels through a 3x3 kernel
    assert node.op.macs(node) == 4 * 5 * 5 * 3 * 9


# ---- normalization within one example


def run_randomized(body: str, x: np.ndarray) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """The generated module with every parameter redrawn (so scale and shift are not 1 and 0),
    its output, and onnxruntime's output with the same weights."""
    spec = compile_one(body, x.shape)
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        expected = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(
        spec.onnx_model(weights=model.state_dict()).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    return model, expected, session.run(None, {"x": x})[0]


def assert_close(got: np.ndarray, reference: torch.Tensor, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(got, reference.numpy(), rtol=0, atol=atol)


@pytest.mark.parametrize(
    ("shape", "groups", "affine"),
    [((3, 6), 3, True), ((2, 6, 5), 2, False), ((2, 8, 4, 5), 4, True), ((2, 4, 2, 3, 4), 1, True)],
)
def test_group_norm_matches_pytorch(shape, groups, affine):
    x = random(shape) * 3 + 1
    model, got_torch, got_onnx = run_randomized(
        f"x -> group_norm({groups}, affine={str(affine).lower()})", x
    )
    layer = model.gn1
    weight = layer.weight if affine else None
    bias = layer.bias if affine else None
    with torch.no_grad():
        reference = F.group_norm(torch.from_numpy(x), groups, weight, bias, eps=1e-5)
    assert_close(got_torch, reference)
    assert_close(got_onnx, reference)


def test_group_norm_groups_must_divide_channels():
    with pytest.raises(dslc.CompileError, match="group_norm: 4 groups do not divide 6 channels"):
        compile_one("x -> group_norm(4)", (1, 6, 3, 3))


@pytest.mark.parametrize(
    ("shape", "affine"), [((2, 3, 7), False), ((2, 4, 5, 6), True), ((1, 2, 3, 4, 5), False)]
)
def test_instance_norm_matches_pytorch(shape, affine):
    x = random(shape) * 2 - 1
    model, got_torch, got_onnx = run_randomized(
        f"x -> instance_norm(affine={str(affine).lower()})", x
    )
    assert isinstance(model.inorm1, getattr(torch.nn, f"InstanceNorm{len(shape) - 2}d"))
    weight = model.inorm1.weight if affine else None
    bias = model.inorm1.bias if affine else None
    with torch.no_grad():
        reference = F.instance_norm(torch.from_numpy(x), weight=weight, bias=bias, eps=1e-5)
    assert_close(got_torch, reference)
    assert_close(got_onnx, reference)


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((2, 7, 4, 5), 5),  # onnxruntime's LRN
        ((2, 7, 4, 5), 4),  # even: PyTorch and ONNX centre the window differently
        ((2, 6, 9), 3),  # rank 3: onnxruntime's LRN takes only rank 4
        ((1, 5, 2, 3, 4), 2),
        ((2, 3, 4, 4), 8),  # a window wider than the channels
    ],
)
def test_local_response_norm_matches_pytorch(shape, size):
    x = random(shape) * 4
    body = f"x -> local_response_norm({size}, alpha=0.1, beta=0.75, k=2.0)"
    reference = F.local_response_norm(torch.from_numpy(x), size, alpha=0.1, beta=0.75, k=2.0)
    check_against(body, x, reference)


# ---- upsampling, padding, identity


@pytest.mark.parametrize(
    ("shape", "body", "kwargs"),
    [
        ((2, 3, 5), "upsample(2)", {"scale_factor": 2, "mode": "nearest"}),
        ((2, 3, 5), 'upsample(3, mode="linear")', {"scale_factor": 3, "mode": "linear"}),
        ((2, 3, 5, 4), 'upsample(2, mode="bilinear")', {"scale_factor": 2, "mode": "bilinear"}),
        (
            (2, 3, 5, 4),
            'upsample(2, mode="bilinear", align_corners=true)',
            {"scale_factor": 2, "mode": "bilinear", "align_corners": True},
        ),
        ((2, 3, 5, 4), "upsample(size=[7, 9])", {"size": (7, 9), "mode": "nearest"}),
        ((2, 3, 14, 9), "upsample(size=[4, 2])", {"size": (4, 2), "mode": "nearest"}),
        (
            (2, 3, 5, 4),
            'upsample(size=[7, 9], mode="bilinear")',
            {"size": (7, 9), "mode": "bilinear"},
        ),
        (
            (2, 3, 5, 4),
            'upsample(size=[1, 3], mode="bilinear")',
            {"size": (1, 3), "mode": "bilinear"},
        ),
        (
            (1, 2, 3, 4, 5),
            'upsample(size=[5, 6, 7], mode="trilinear", align_corners=true)',
            {"size": (5, 6, 7), "mode": "trilinear", "align_corners": True},
        ),
        ((1, 2, 3, 4, 5), "upsample(3)", {"scale_factor": 3, "mode": "nearest"}),
    ],
)
def test_upsample_matches_interpolate(shape, body, kwargs):
    x = random(shape)
    check_against(f"x -> {body}", x, F.interpolate(torch.from_numpy(x), **kwargs))


def test_nearest_indices_follow_pytorch_over_a_grid():
    """Sized nearest resizing rounds as PyTorch does for every size pair up to 40 x 60 (ONNX
    Resize's own nearest mapping differs at some, e.g. 14 -> 2)."""
    for size in range(1, 41):
        x = torch.arange(size, dtype=torch.float32)[None, None]
        for out in range(1, 61):
            expected = F.interpolate(x, size=out, mode="nearest")[0, 0].long().numpy()
            np.testing.assert_array_equal(nearest_indices(size, out), expected)


def test_upsample_symbolic_dims_scale():
    spec = dslc.compile_source(
        'model M { input x: f32[N, 3, H, W]  output y = x -> upsample(2, mode="bilinear") }'
    )
    assert str(spec.graph.outputs["y"].type) == "f32[N, 3, 2*H, 2*W]"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("upsample(2, size=[4, 4])", "upsample takes one of scale_factor, size and like"),
        ("upsample()", "upsample takes one of scale_factor, size and like"),
        ('upsample(2, mode="linear")', 'mode "linear" is for rank-3 inputs'),
        ("upsample(2, align_corners=true)", "align_corners is for the linear modes"),
        ("upsample(1.5)", "scale_factor must be an integer"),
        ('pad(1, value=2, mode="reflect")', 'value is for mode "constant"'),
        ('pad(4, mode="reflect")', "reflect padding must be smaller than the dim it pads, 4"),
        ("pad([1, 2, 3])", "padding has 3 values; the input has 2 spatial dims, so give 1, 2 or 4"),
    ],
)
def test_resize_and_pad_errors(body, message):
    with pytest.raises(dslc.CompileError, match=message):
        compile_one(f"x -> {body}", (1, 2, 4, 4))


@pytest.mark.parametrize(
    ("shape", "body", "torch_pad", "kwargs"),
    [
        ((2, 3, 5, 4), "pad([0, 1, 2, 3])", (2, 3, 0, 1), {}),  # [top, bottom, left, right]
        ((2, 3, 5, 4), "pad([1, 2])", (2, 2, 1, 1), {}),  # per dim, both sides
        ((2, 3, 5, 4), 'pad(2, mode="reflect")', (2, 2, 2, 2), {"mode": "reflect"}),
        ((2, 3, 5), "pad([1, 3], value=1.5)", (1, 3), {"value": 1.5}),
        (
            (1, 2, 3, 4, 5),
            'pad([1, 0, 2], mode="replicate")',
            (2, 2, 0, 0, 1, 1),
            {"mode": "replicate"},
        ),
    ],
)
def test_pad_matches_pytorch(shape, body, torch_pad, kwargs):
    x = random(shape)
    check_against(f"x -> {body}", x, F.pad(torch.from_numpy(x), torch_pad, **kwargs))


def test_identity_is_a_no_op_in_both_backends():
    spec = compile_one("x -> identity -> relu", (2, 3))
    x = random((2, 3))
    got_torch, got_onnx = run_both(spec, x)
    np.testing.assert_array_equal(got_torch, np.maximum(x, 0))
    np.testing.assert_array_equal(got_onnx, np.maximum(x, 0))
    assert [n.op_type for n in spec.onnx_model().graph.node] == ["Relu"]
