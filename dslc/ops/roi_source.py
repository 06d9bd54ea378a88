"""The PyTorch helpers that roi_align and roi_pool (roi.py) emit: pure torch, no torchvision,
written from torchvision's kernels (ops/csrc/ops/cpu/roi_align_kernel.cpp, roi_pool_kernel.cpp)
and its poolers.py, with the same float32 arithmetic in the same order. Vectorized over RoIs:
each output bin is a weighted bag of feature rows, which F.embedding_bag sums in one call."""

from __future__ import annotations

ROI_ALIGN = '''
def roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """RoI Align (Mask R-CNN), as torchvision.ops.roi_align: each RoI of `rois` (K, 5), rows
    (image index, x1, y1, x2, y2) in image pixels, pooled from `features` (N, C, H, W) into
    (K, C, *output_size). A bin averages the features bilinearly interpolated at a grid of
    sampling_ratio x sampling_ratio points (<= 0: ceil(RoI size / output size) per RoI);
    `aligned` shifts the RoI by half a pixel, so that pixel centres sit at +0.5."""
    if sampling_ratio <= 0 and rois.shape[0] > 256:
        # adaptive grids are padded to the largest: a few hundred RoIs at a time fit in memory
        parts = rois.split(256)
        args = (output_size, spatial_scale, sampling_ratio, aligned)
        return torch.cat([roi_align(features, part, *args) for part in parts])
    n, c, height, width = features.shape
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))
    ys, wy, grid_h = _roi_samples(y1, y2, output_size[0], height, sampling_ratio, aligned)
    xs, wx, grid_w = _roi_samples(x1, x2, output_size[1], width, sampling_ratio, aligned)
    k, ph, iy = ys.shape[:3]
    pw, ix = xs.shape[1:3]
    # each bin's bag: every sample's four corners (y, x), as rows of the (N * H * W, C) table
    start = rois[:, 0].long() * (height * width)
    index = start[:, None, None, None, None, None, None] + (
        ys[:, :, None, :, None, :, None] * width + xs[:, None, :, None, :, None, :]
    )  # (K, PH, PW, IY, IX, 2, 2)
    weight = wy[:, :, None, :, None, :, None] * wx[:, None, :, None, :, None, :]
    table = features.permute(0, 2, 3, 1).reshape(n * height * width, c)
    bags = index.reshape(k * ph * pw, iy * ix * 4)
    out = F.embedding_bag(bags, table, per_sample_weights=weight.reshape(bags.shape), mode="sum")
    count = (grid_h * grid_w).clamp(min=1)
    return out.view(k, ph, pw, c).permute(0, 3, 1, 2) / count[:, None, None, None]


def _roi_samples(start, end, bins, size, sampling_ratio, aligned):
    """Along one axis: each RoI's sample points (K, bins, grid) as the two pixels either side,
    (K, bins, grid, 2), with their bilinear weights, and the RoI's own grid (K,). Samples
    outside [-1, size], and grid points beyond an RoI's own grid, weigh 0."""
    length = end - start
    if not aligned:
        length = length.clamp(min=1.0)
    bin_size = length / bins
    if sampling_ratio > 0:
        grid = torch.full_like(length, sampling_ratio)
    else:
        grid = torch.ceil(length / bins)
    most = max(int(grid.max()), 1) if grid.numel() else 1
    b = torch.arange(bins, device=start.device).to(start.dtype)[None, :, None]
    g = torch.arange(most, device=start.device).to(start.dtype)[None, None, :]
    bin_size, count = bin_size[:, None, None], grid[:, None, None]
    p = start[:, None, None] + b * bin_size + (g + 0.5) * bin_size / count  # (K, bins, grid)
    used = (g < count) & (p >= -1.0) & (p <= size)
    p = torch.where(used, p, 0.0).clamp(min=0.0)
    low = p.long().clamp(max=size - 1)
    high = (low + 1).clamp(max=size - 1)
    p = torch.where(low >= size - 1, low.to(p.dtype), p)
    ok = used.to(p.dtype)
    frac = (p - low) * ok
    weights = torch.stack([(1.0 - frac) * ok, frac], dim=-1)
    return torch.stack([low, high], dim=-1), weights, grid.long()
'''

MULTI_SCALE_ROI_ALIGN = '''
def multi_scale_roi_align(
    features, rois, output_size, scales, sampling_ratio=-1, canonical_scale=224, canonical_level=4
):
    """torchvision's MultiScaleRoIAlign: each RoI pooled by roi_align from the level of the
    feature pyramid `features` (finest first, at `scales`) that its size picks, by eq. 1 of
    the FPN paper: floor(canonical_level + log2(sqrt(area) / canonical_scale)), clamped to
    the levels there are."""
    k_min = int(-torch.log2(torch.tensor(scales[0], dtype=torch.float32)).item())
    k_max = int(-torch.log2(torch.tensor(scales[-1], dtype=torch.float32)).item())
    sizes = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    eps = torch.tensor(1e-6, dtype=sizes.dtype)
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_scale) + eps)
    levels = levels.clamp(min=k_min, max=k_max).long() - k_min
    result = features[0].new_zeros((rois.shape[0], features[0].shape[1], *output_size))
    for level, (feature, scale) in enumerate(zip(features, scales, strict=True)):
        index = torch.where(levels == level)[0]
        pooled = roi_align(feature, rois[index], output_size, scale, sampling_ratio)
        result[index] = pooled
    return result
'''

ROI_POOL = '''
def roi_pool(features, rois, output_size, spatial_scale=1.0):
    """RoI pooling (Fast R-CNN), as torchvision.ops.roi_pool: each RoI of `rois` (K, 5), rows
    (image index, x1, y1, x2, y2), rounded to whole pixels of `features` (N, C, H, W) and cut
    into output_size bins, each the maximum of its pixels (0 for a bin outside the map)."""
    n, c, height, width = features.shape
    x1, y1, x2, y2 = (_round_half_away(rois[:, i] * spatial_scale).long() for i in range(1, 5))
    top, bottom = _bin_bounds(y1, y2, output_size[0], height, features.dtype)  # (K, PH)
    left, right = _bin_bounds(x1, x2, output_size[1], width, features.dtype)  # (K, PW)
    out = features.new_zeros(len(rois), c, *output_size)
    for k, image in enumerate(rois[:, 0].long().tolist()):
        most = int((right[k] - left[k]).max())
        if most <= 0:
            continue
        columns = left[k, :, None] + torch.arange(most, device=features.device)
        inside = columns < right[k, :, None]  # (PW, most): each bin's columns, padded
        columns = columns.clamp(max=width - 1)
        for i, (lo, hi) in enumerate(zip(top[k].tolist(), bottom[k].tolist(), strict=True)):
            if hi > lo:
                strip = features[image, :, lo:hi].amax(dim=1)[:, columns]  # (C, PW, most)
                pooled = strip.masked_fill(~inside, float("-inf")).amax(dim=2)
                out[k, :, i] = pooled.masked_fill(~inside.any(dim=1), 0.0)
    return out


def _round_half_away(x):
    """C's round(): halves away from zero (torch.round rounds them to even)."""
    whole = torch.trunc(x)
    return torch.where((x - whole).abs() == 0.5, whole + torch.sign(x), torch.round(x))


def _bin_bounds(start, end, bins, size, dtype):
    """Along one axis: each RoI's bins as [lo, hi) pixel ranges (K, bins) each, clipped to
    the map (empty where hi <= lo); the bin size in `dtype`, as torchvision's kernel."""
    bin_size = (end - start + 1).clamp(min=1).to(dtype) / bins
    b = torch.arange(bins, device=start.device).to(dtype)
    lo = torch.floor(b[None, :] * bin_size[:, None]).long() + start[:, None]
    hi = torch.ceil((b[None, :] + 1) * bin_size[:, None]).long() + start[:, None]
    return lo.clamp(0, size), hi.clamp(0, size)
'''
