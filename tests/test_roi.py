"""roi_align and roi_pool (dslc/ops/roi.py). The PyTorch helpers that dslc emits are checked
against references written here from the ops' definitions (plain loops in NumPy, float64:
bilinear interpolation at each bin's sample points, averaged; the maximum over each bin for
RoI pooling, with the kernel's float32 bin edges), on random features and RoIs that include
the edge cases: partly or wholly outside the map, smaller than a pixel, aligned true and
false, sampling_ratio 0, -1 and 2. onnxruntime runs the ONNX form against the helpers. The
multi-level form is compared with torchvision's own MultiScaleRoIAlign (its Python code,
poolers.py): torchvision's roi_align is a C++ kernel that does not load here, so the test
monkeypatches `torchvision.ops.poolers.roi_align` with the reference below."""

from __future__ import annotations

import math
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from reference import torchvision_models

import dslc
from dslc.ops.roi_source import MULTI_SCALE_ROI_ALIGN, ROI_ALIGN, ROI_POOL
from dslc.runtime.parity import random_rois, roi_inputs

HELPERS: dict = {"torch": torch, "F": F}
exec(ROI_ALIGN + MULTI_SCALE_ROI_ALIGN + ROI_POOL, HELPERS)  # the source dslc emits
roi_align, roi_pool = HELPERS["roi_align"], HELPERS["roi_pool"]
multi_scale_roi_align = HELPERS["multi_scale_roi_align"]


# ---- references, from the definitions


def bilinear(f: np.ndarray, y: float, x: float) -> np.ndarray:
    """f (C, H, W) at (y, x): 0 beyond one pixel outside the map, the edge value up to it."""
    _, h, w = f.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(f.shape[0])
    y, x = min(max(y, 0.0), h - 1), min(max(x, 0.0), w - 1)
    y0, x0 = math.floor(y), math.floor(x)
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * f[:, y0, x0]
        + (1 - ly) * lx * f[:, y0, x1]
        + ly * (1 - lx) * f[:, y1, x0]
        + ly * lx * f[:, y1, x1]
    )


def ref_roi_align(x, rois, size, scale=1.0, sampling=-1, aligned=False) -> np.ndarray:
    x, rois = np.asarray(x, np.float64), np.asarray(rois, np.float64)
    (ph, pw), offset = size, 0.5 if aligned else 0.0
    out = np.zeros((len(rois), x.shape[1], ph, pw))
    for k, (n, x1, y1, x2, y2) in enumerate(rois):
        sx, sy, ex, ey = (v * scale - offset for v in (x1, y1, x2, y2))
        rw, rh = (ex - sx, ey - sy) if aligned else (max(ex - sx, 1.0), max(ey - sy, 1.0))
        gh = sampling if sampling > 0 else math.ceil(rh / ph)
        gw = sampling if sampling > 0 else math.ceil(rw / pw)
        for i in range(ph):
            for j in range(pw):
                samples = [
                    bilinear(
                        x[int(n)],
                        sy + (i + (a + 0.5) / gh) * rh / ph,
                        sx + (j + (b + 0.5) / gw) * rw / pw,
                    )
                    for a in range(gh)
                    for b in range(gw)
                ]
                out[k, :, i, j] = np.sum(samples, axis=0) / max(gh * gw, 1)
    return out


def c_round(v: float) -> int:
    return int(math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1))


def ref_roi_pool(x, rois, size, scale=1.0) -> np.ndarray:
    """Fast R-CNN's RoI pooling, with the kernel's float32 bin edges (floor and ceil)."""
    x, (ph, pw), f32 = np.asarray(x, np.float64), size, np.float32
    _, _, h, w = x.shape
    out = np.zeros((len(rois), x.shape[1], ph, pw))
    for k, (n, x1, y1, x2, y2) in enumerate(np.asarray(rois, np.float32)):
        sx, sy, ex, ey = (c_round(float(f32(v) * f32(scale))) for v in (x1, y1, x2, y2))
        bh, bw = f32(max(ey - sy + 1, 1)) / f32(ph), f32(max(ex - sx + 1, 1)) / f32(pw)
        for i in range(ph):
            hs = min(max(math.floor(f32(i) * bh) + sy, 0), h)
            he = min(max(math.ceil(f32(i + 1) * bh) + sy, 0), h)
            for j in range(pw):
                ws = min(max(math.floor(f32(j) * bw) + sx, 0), w)
                we = min(max(math.ceil(f32(j + 1) * bw) + sx, 0), w)
                region = x[int(n), :, hs:he, ws:we]
                out[k, :, i, j] = region.max(axis=(1, 2)) if region.size else 0.0
    return out


# ---- random cases with the edge cases in them


def case(seed: int, n: int = 2, c: int = 3, h: int = 10, w: int = 12, scale: float = 0.5):
    """Features (n, c, h, w) and RoIs in image pixels (the map covers h / scale x w / scale):
    random ones, and ones partly outside, wholly outside, tiny, of zero size and the whole map."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    image_h, image_w = h / scale, w / scale
    rois = [random_rois(12, n, (image_h, image_w), rng)]
    rois.append(
        [
            [0, -6.0, -4.0, 7.0, 9.0],  # partly outside, top left
            [1, image_w - 5, image_h - 3, image_w + 9, image_h + 6],  # partly outside
            [0, image_w + 4, 3.0, image_w + 20, 9.0],  # wholly outside
            [1, 5.3, 6.1, 5.6, 6.4],  # under a pixel
            [0, 8.0, 8.0, 8.0, 8.0],  # zero size
            [1, 0.0, 0.0, image_w, image_h],  # the whole map
        ]
    )
    return x, np.concatenate(rois).astype(np.float32)


def helper(fn, x, rois, *args, **kwargs) -> np.ndarray:
    with torch.no_grad():
        return fn(torch.from_numpy(x), torch.from_numpy(rois), *args, **kwargs).double().numpy()


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling", [0, -1, 2])
@pytest.mark.parametrize("size", [(2, 2), (3, 4)])
def test_roi_align_is_the_definition(aligned, sampling, size):
    x, rois = case(0)
    expected = ref_roi_align(x, rois, size, 0.5, sampling, aligned)
    got = helper(roi_align, x, rois, size, 0.5, sampling, aligned)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    exact = roi_align(
        torch.from_numpy(x).double(), torch.from_numpy(rois).double(), size, 0.5, sampling, aligned
    )
    np.testing.assert_allclose(exact.numpy(), expected, rtol=0, atol=1e-12)


def test_roi_align_matches_torchvisions_own_python_form():
    """torchvision also ships a pure-Python roi_align (ops/roi_align.py, _roi_align, for
    torch.compile); uncompiled it is one more independent form of the kernel, for RoIs on the
    map: it does not zero the samples more than a pixel outside, as the C++ kernel does."""
    torchvision_models()
    import sys

    tv = sys.modules["torchvision.ops.roi_align"]._roi_align.__wrapped__
    x, rois = case(1)
    rois = rois[[*range(12), 15, 16, 17]]  # the random ones, tiny, zero-sized, the whole map
    for sampling, aligned in [(2, False), (0, True), (-1, False)]:
        expected = tv(torch.from_numpy(x), torch.from_numpy(rois), 0.5, 3, 2, sampling, aligned)
        got = helper(roi_align, x, rois, (3, 2), 0.5, sampling, aligned)
        np.testing.assert_allclose(got, expected.double().numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [(2, 2), (3, 5), (7, 7)])
def test_roi_pool_is_the_definition(size):
    x, rois = case(2)
    got = helper(roi_pool, x, rois, size, 0.5)
    np.testing.assert_array_equal(got, ref_roi_pool(x, rois, size, 0.5))


def test_roi_pool_rounds_halves_away_from_zero():
    """x1 = 2.5 at scale 1 starts at pixel 3 (C's round), not 2 (round half to even)."""
    x = np.arange(2 * 8 * 8, dtype=np.float32).reshape(1, 2, 8, 8)
    rois = np.array([[0, 2.5, 0.5, 4.5, 2.5]], np.float32)
    got = helper(roi_pool, x, rois, (1, 1))
    np.testing.assert_array_equal(got, ref_roi_pool(x, rois, (1, 1)))
    assert got[0, 0, 0, 0] == x[0, 0, 3, 5]


def test_no_rois_give_an_empty_result():
    x, rois = case(3)
    empty = rois[:0]
    assert helper(roi_align, x, empty, (2, 2)).shape == (0, 3, 2, 2)
    assert helper(roi_pool, x, empty, (2, 2)).shape == (0, 3, 2, 2)


def test_gradients_flow_through_the_helpers():
    x, rois = case(4, n=1, c=2, h=5, w=6)
    rois = torch.from_numpy(rois[:5]).double()
    features = torch.from_numpy(x).double().requires_grad_()
    for sampling, aligned in [(2, False), (0, True)]:
        torch.autograd.gradcheck(
            lambda f, s=sampling, a=aligned: roi_align(f, rois, (2, 2), 0.5, s, a), (features,)
        )
    torch.autograd.gradcheck(lambda f: roi_pool(f, rois, (2, 2), 0.5), (features,))
    levels = [features, torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)]
    torch.autograd.gradcheck(
        lambda a, b: multi_scale_roi_align([a, b], rois, (2, 2), [0.5, 0.25], 2, 8), levels
    )


# ---- several levels: torchvision's MultiScaleRoIAlign


def test_several_levels_are_torchvisions_multi_scale_roi_align(monkeypatch):
    torchvision_models()
    from torchvision.ops import poolers

    def reference(x, rois, output_size, spatial_scale, sampling_ratio):
        out = ref_roi_align(x.numpy(), rois.numpy(), output_size, spatial_scale, sampling_ratio)
        return torch.from_numpy(out).float()

    monkeypatch.setattr(poolers, "roi_align", reference)
    rng = np.random.default_rng(5)
    sizes, scales = [32, 16, 8, 4], [0.25, 0.125, 0.0625, 0.03125]
    features = {f"p{i + 2}": torch.randn(2, 3, s, s) for i, s in enumerate(sizes)}
    rois = torch.from_numpy(random_rois(40, 2, (128.0, 128.0), rng).astype(np.float32))
    rois = rois[rois[:, 0].argsort(stable=True)]  # torchvision takes the boxes image by image
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    pooler = poolers.MultiScaleRoIAlign(list(features), 7, 2, canonical_scale=32)
    expected = pooler(features, boxes, [(128, 128)] * 2)
    levels = pooler.map_levels(boxes)
    assert set(levels.tolist()) == {0, 1, 2, 3}, "every level is used"
    with torch.no_grad():
        got = multi_scale_roi_align(list(features.values()), rois, (7, 7), scales, 2, 32)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=1e-5)


# ---- ONNX


def run_both(source: str, x: np.ndarray, rois: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    spec = dslc.compile_source(source)
    model = spec.torch_module().eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(x), torch.from_numpy(rois)).numpy()
    onnx_model = spec.onnx_model(weights=model.state_dict())
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"x": x, "rois": rois})
    return expected, got


@pytest.mark.parametrize("aligned", ["false", "true"])
@pytest.mark.parametrize("sampling", [0, -1, 2])
def test_onnxruntime_agrees_with_the_helper(aligned, sampling):
    source = f"""
    model M {{
        input x: f32[N, 3, 10, 12]
        input rois: f32[K, 5]
        output y = [x, rois] -> roi_align([3, 2], 0.5, {sampling}, aligned={aligned})
    }}
    """
    x, rois = case(6)
    expected, got = run_both(source, x, rois)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_onnxruntime_agrees_over_levels_and_for_roi_pool():
    x, rois = case(7, h=16, w=16, scale=0.25)
    levels = """
    model M {
        input x: f32[N, 3, 16, 16]
        input rois: f32[K, 5]
        p3 = x -> max_pool2d(2)
        output y = [x, p3, rois] -> roi_align(2, [0.25, 0.125], 2, canonical_scale=32)
    }
    """
    expected, got = run_both(levels, x, rois)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    pool = levels.replace("p3 = x -> max_pool2d(2)\n", "").replace(
        "[x, p3, rois] -> roi_align(2, [0.25, 0.125], 2, canonical_scale=32)",
        "roi_pool(x, rois, [3, 2], spatial_scale=0.25)",
    )
    expected, got = run_both(pool, x, rois)
    np.testing.assert_array_equal(got, expected)


def test_parity_draws_rois_inside_the_image():
    spec = dslc.load("specs/roi_heads.dl")
    assert roi_inputs(spec.graph) == {"rois": (64.0, 64.0)}
    rois = random_rois(500, 3, (64.0, 48.0), np.random.default_rng(0))
    assert set(rois[:, 0]) == {0.0, 1.0, 2.0}
    assert (rois[:, 1] < rois[:, 3]).all() and (rois[:, 2] < rois[:, 4]).all()
    assert rois[:, 1:].min() >= 0 and (rois[:, 3] <= 48).all() and (rois[:, 4] <= 64).all()


def test_a_thousand_rois_of_256_channels_pool_quickly():
    """The Faster R-CNN box head's pooling: 1000 RoIs, 256 channels, 7x7 bins, sampling 2,
    from a stride-4 map of an 800-pixel image."""
    x = torch.randn(1, 256, 200, 200)
    rois = torch.from_numpy(random_rois(1000, 1, (800.0, 800.0), np.random.default_rng(0)))
    rois = rois.float()
    with torch.no_grad():
        start = time.perf_counter()
        out = roi_align(x, rois, (7, 7), 0.25, 2)
        seconds = time.perf_counter() - start
    assert out.shape == (1000, 256, 7, 7)
    assert seconds < 3.0, f"{seconds:.2f} s"
