"""Pooling over 1, 2 or 3 spatial dims, input layout (N, C, *spatial)."""

from __future__ import annotations

import numpy as np

from dslc.diagnostics import SpecError
from dslc.ops import pycode
from dslc.ops.base import Attr, OpDef, expect_float, expect_rank, ntuple, register
from dslc.ops.conv import output_spatial, resolve_window


class PoolNd(OpDef):
    dims: int
    kind: str  # "max" | "avg"
    family = "pool"
    prefix = "pool"

    def resolve(self, ins, a):
        expect_rank(self.name, ins[0], (self.dims + 2,), " (N, C, *spatial)")
        if a["padding"] == "same":
            raise SpecError(
                f'{self.name}: padding="same" is not supported for pooling',
                hint="give explicit padding",
            )
        a = dict(a, stride=a["kernel"] if a["stride"] is None else a["stride"], dilation=1)
        a = resolve_window(self.name, self.dims, a, ("kernel", "stride", "dilation"))
        del a["dilation"]
        if any(2 * p > k for p, k in zip(a["padding"], a["kernel"] * 2, strict=True)):
            raise SpecError(f"{self.name}: padding must be at most half the kernel size")
        return a

    def infer(self, ins, a):
        (x,) = ins
        expect_float(self.name, x)
        spatial = output_spatial(self.name, x, a, self.dims)
        return x.with_shape((*x.shape[:2], *spatial))

    def torch_call(self, node, args, module):
        """F.max_pool2d takes the arguments of nn.MaxPool2d after the input."""
        return pycode.render(self.torch_layer(node), f"F.{self.kind}_pool{self.dims}d", args[0])

    def torch_layer(self, node):
        a, n = node.attrs, self.dims
        return pycode.ctor(
            f"nn.{self.kind.title()}Pool{n}d",
            pycode.attr(node, "kernel", pycode.compact(a["kernel"])),
            stride=pycode.attr(
                node, "stride", pycode.compact(a["stride"]), default=pycode.compact(a["kernel"])
            ),
            padding=pycode.attr(node, "padding", pycode.compact(a["padding"][:n]), default=0),
            ceil_mode=pycode.attr(node, "ceil_mode", default=False),
        )

    def onnx(self, node, b, ins, outs):
        a = node.attrs
        extra = {"count_include_pad": 1} if self.kind == "avg" else {}
        if a["ceil_mode"]:
            extra["ceil_mode"] = 1
        b.add(
            node,
            "MaxPool" if self.kind == "max" else "AveragePool",
            ins,
            outs,
            kernel_shape=list(a["kernel"]),
            strides=list(a["stride"]),
            pads=list(a["padding"]),
            **extra,
        )


_POOL_ATTRS = (
    Attr("kernel", "ints", doc="window size", positive=True),
    Attr(
        "stride", "ints", None, "step between windows; defaults to the kernel size", positive=True
    ),
    Attr("padding", "padding", 0, "padding per side (max: -inf, avg: zeros, counted)", minimum=0),
    Attr("ceil_mode", "bool", False, "round the output size up (a last, partial window)"),
)

for _kind, _what in (("max", "Maximum"), ("avg", "Average")):
    for _n in (1, 2, 3):
        register(
            type(
                f"{_kind.title()}Pool{_n}d",
                (PoolNd,),
                {
                    "name": f"{_kind}_pool{_n}d",
                    "dims": _n,
                    "kind": _kind,
                    "attrs": _POOL_ATTRS,
                    "doc": f"{_what} over windows of {_n} spatial dim{'s' if _n > 1 else ''} "
                    f"(torch F.{_kind}_pool{_n}d).",
                    "example": f"x -> {_kind}_pool{_n}d(2)",
                },
            )
        )


class GlobalPool(OpDef):
    """Mean or maximum over all spatial dims: (N, C, *spatial) -> (N, C)."""

    family = "pool"
    reduce: str  # mean | amax
    onnx_op: str

    def infer(self, ins, a):
        (x,) = ins
        expect_float(self.name, x)
        expect_rank(self.name, x, (3, 4, 5), " (N, C, *spatial)")
        return x.with_shape(x.shape[:2])

    def torch_call(self, node, args, module):
        return pycode.tensor_method(args[0], self.reduce, tuple(range(2, node.inputs[0].type.rank)))

    def onnx(self, node, b, ins, outs):
        pooled = b.add(node, self.onnx_op, ins, [b.temp(node, "pooled")])
        b.add(node, "Flatten", [pooled], outs, axis=1)


@register
class GlobalAvgPool(GlobalPool):
    name = "global_avg_pool"
    prefix = "gap"
    doc = "Mean over all spatial dims: (N, C, *spatial) -> (N, C), as Keras' GlobalAveragePooling."
    example = "x -> global_avg_pool"
    reduce, onnx_op = "mean", "GlobalAveragePool"


@register
class GlobalMaxPool(GlobalPool):
    name = "global_max_pool"
    prefix = "gmp"
    doc = "Maximum over all spatial dims: (N, C, *spatial) -> (N, C), as Keras' GlobalMaxPooling."
    example = "x -> global_max_pool"
    reduce, onnx_op = "amax", "GlobalMaxPool"


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows: [floor(i*L/out), ceil((i+1)*L/out)) for each i.
    Windows overlap or repeat where the sizes do not divide, and when out > L."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def averaging_matrix(size: int, out: int) -> np.ndarray:
    """(out, size): row i averages window i, so A @ v pools a vector exactly as PyTorch does."""
    m = np.zeros((out, size), dtype=np.float32)
    for i, (start, end) in enumerate(adaptive_windows(size, out)):
        m[i, start:end] = 1.0 / (end - start)
    return m


class AdaptiveAvgPoolNd(OpDef):
    dims: int
    family = "pool"
    prefix = "pool"
    attrs = (
        Attr(
            "output_size",
            "ints",
            doc="output spatial size, one int or one per spatial dim; may exceed the input",
            positive=True,
        ),
    )

    def resolve(self, ins, a):
        expect_rank(self.name, ins[0], (self.dims + 2,), " (N, C, *spatial)")
        return {"output_size": ntuple(a["output_size"], self.dims, self.name, "output_size")}

    def infer(self, ins, a):
        (x,) = ins
        expect_float(self.name, x)
        out = a["output_size"]
        if any(o != 1 for o in out) and not all(isinstance(d, int) for d in x.shape[2:]):
            raise SpecError(
                f"{self.name} to {pycode.py(pycode.compact(out))} needs known spatial sizes, "
                f"got {x}",
                hint="only output_size 1 (a global average) works with symbolic sizes",
            )
        return x.with_shape((*x.shape[:2], *out))

    def torch_layer(self, node):
        out = pycode.compact(node.attrs["output_size"])
        return pycode.ctor(f"nn.AdaptiveAvgPool{self.dims}d", pycode.attr(node, "output_size", out))

    def tables(self, ins, a):
        """The averaging matrices of _separable, when onnx() takes that path."""
        out, sizes = a["output_size"], ins[0].shape[2:]
        pairs = list(zip(out, sizes, strict=True))
        if all(o == 1 for o in out) or all(isinstance(s, int) and s % o == 0 for o, s in pairs):
            return {}
        return {f"avg{2 + i}": (o, s) for i, (o, s) in enumerate(pairs) if o != s}

    def torch_call(self, node, args, module):
        return pycode.render(self.torch_layer(node), f"F.adaptive_avg_pool{self.dims}d", args[0])

    def onnx(self, node, b, ins, outs):
        out, sizes = node.attrs["output_size"], node.inputs[0].type.shape[2:]
        if tuple(sizes) == out:  # torchvision's AlexNet and VGG at 224: already that size
            b.alias(outs[0], ins[0])
        elif all(o == 1 for o in out):
            b.add(node, "GlobalAveragePool", ins, outs)
        elif all(s % o == 0 for s, o in zip(sizes, out, strict=True)):
            kernel = [s // o for s, o in zip(sizes, out, strict=True)]
            b.add(node, "AveragePool", ins, outs, kernel_shape=kernel, strides=kernel)
        else:
            self._separable(node, b, ins[0], outs[0], [int(s) for s in sizes])

    def _separable(self, node, b, x: str, y: str, sizes: list[int]) -> None:
        """Windows that do not tile the input: average along one axis at a time, as a MatMul
        with a constant (out, size) averaging matrix A."""
        out = node.attrs["output_size"]
        axes = [2 + i for i in range(self.dims) if sizes[i] != out[i]]
        for k, axis in enumerate(axes):
            target = y if k == len(axes) - 1 else b.temp(node, f"axis{axis}")
            matrix = averaging_matrix(sizes[axis - 2], out[axis - 2])
            x = self._along(node, b, x, axis, matrix, target)

    def _along(self, node, b, x: str, axis: int, matrix: np.ndarray, target: str) -> str:
        """x averaged along one axis: x @ A^T for the last, A @ x for the one before (MatMul
        broadcasts A over the leading dims); an earlier axis is swapped last and back."""
        rank = self.dims + 2
        if axis == rank - 2:
            return b.add(node, "MatMul", [b.const(node, f"avg{axis}", matrix, "f32"), x], [target])
        weights = b.const(node, f"avg{axis}", matrix.T, "f32")
        if axis == rank - 1:
            return b.add(node, "MatMul", [x, weights], [target])
        perm = list(range(rank))
        perm[axis], perm[-1] = perm[-1], perm[axis]
        moved = b.add(node, "Transpose", [x], [b.temp(node, f"moved{axis}")], perm=perm)
        pooled = b.add(node, "MatMul", [moved, weights], [b.temp(node, f"pooled{axis}")])
        return b.add(node, "Transpose", [pooled], [target], perm=perm)


for _n in (1, 2, 3):
    register(
        type(
            f"AdaptiveAvgPool{_n}d",
            (AdaptiveAvgPoolNd,),
            {
                "name": f"adaptive_avg_pool{_n}d",
                "dims": _n,
                "doc": f"Average over {_n}-D windows sized so the output has `output_size` "
                f"(torch F.adaptive_avg_pool{_n}d; PyTorch's window rule, sizes need not divide).",
                "example": [
                    "x -> adaptive_avg_pool1d(8)",
                    "x -> adaptive_avg_pool2d(7)",
                    "x -> adaptive_avg_pool3d([2, 4, 4])",
                ][_n - 1],
            },
        )
    )
