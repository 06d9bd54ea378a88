"""Indexing and slicing (`x[:, 1:]`), split with a symbolic remainder, expand and tile, and
shape queries (`shape(x)[1]`): each against NumPy's own indexing (or torch's own op), in the
generated PyTorch and in onnxruntime, on a symbolic dim at several sizes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import dslc

SUBSCRIPTS = [
    ":, 0",
    ":, -1",
    ":, 1:",
    ":, :-1",
    ":, ::2",
    ":, 1::3",
    ":, ::-1",
    ":, ::-2",
    "..., :3",
    "..., 5",
    ":, -2:, 1:7:2",
    ":, :, 7:1:-2",
    ":, :, -1:-6:-1",
    ":, 0, ::-1",
    "..., 2:-2, :",
]


def _run(spec: dslc.Spec, feeds: dict[str, np.ndarray]) -> tuple[list, list]:
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    with torch.no_grad():
        out = model(*(torch.from_numpy(v) for v in feeds.values()))
    outs = [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]
    session = ort.InferenceSession(
        spec.onnx_model(weights=model.state_dict()).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    return outs, session.run(None, feeds)


@pytest.fixture(scope="module")
def sliced() -> dslc.Spec:
    body = "  ".join(f"output y{i} = x[{s}]" for i, s in enumerate(SUBSCRIPTS))
    return dslc.compile_source(f"model M {{ input x: f32[N, T, 8]  {body} }}")


@pytest.mark.parametrize("t", [2, 7, 64])
def test_subscripts_are_numpys_in_both_backends(sliced: dslc.Spec, t: int) -> None:
    x = np.random.default_rng(t).standard_normal((3, t, 8)).astype(np.float32)
    torch_outs, onnx_outs = _run(sliced, {"x": x})
    for s, got, onnx in zip(SUBSCRIPTS, torch_outs, onnx_outs, strict=True):
        want = eval(f"x[{s}]")  # the subscript as NumPy reads it: the independent answer
        np.testing.assert_array_equal(got, want, err_msg=s)
        np.testing.assert_array_equal(onnx, want, err_msg=s)


def test_symbolic_sizes_follow_the_slice(sliced: dslc.Spec) -> None:
    shapes = {k: str(v.type) for k, v in sliced.graph.outputs.items()}
    assert shapes["y2"] == "f32[N, T - 1, 8]"  # 1:
    assert shapes["y4"] == "f32[N, floor((T + 1)/2), 8]"  # ::2
    assert shapes["y10"] == "f32[N, 2, 3]"  # -2:, 1:7:2
    assert shapes["y0"] == "f32[N, 8]"


def test_generated_code_reads_like_pytorch(sliced: dslc.Spec) -> None:
    src = sliced.torch_source()
    assert "y0 = x[:, 0]" in src
    assert "y2 = x[:, 1:]" in src
    assert "y6 = x.flip(1)" in src  # torch's indexing takes no negative step
    assert "y11 = x.flip(2)[:, :, :5:2]" in src


def test_split_with_a_symbolic_remainder() -> None:
    spec = dslc.compile_source(
        "model M { input x: f32[N, T, 8]\n"
        "  first, rest = x -> split([1, -1], axis=1)\n"
        "  a, b, c = x -> split([2, T - 3, 1], axis=1)\n"
        "  output first  output rest  output a  output b  output c }"
    )
    assert str(spec.graph.outputs["rest"].type) == "f32[N, T - 1, 8]"
    for t in (3, 7, 64):
        x = np.random.default_rng(t).standard_normal((2, t, 8)).astype(np.float32)
        want = [x[:, :1], x[:, 1:], x[:, :2], x[:, 2:-1], x[:, -1:]]
        for got in _run(spec, {"x": x}):
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w)


def test_expand_a_class_token_to_the_batch_and_tile() -> None:
    spec = dslc.compile_source(
        "model M { input x: f32[N, 4, 6]\n"
        "  cls = parameter([1, 1, 6], init=0.5)\n"
        "  tokens = [cls -> expand([N, 1, 6], like=x), x] -> concat(axis=1)\n"
        "  output tokens  output t = x -> tile([1, 2, 3]) }"
    )
    assert "self.cls.expand(x.shape[0], -1, -1)" in spec.torch_source()
    for n in (1, 3, 7):
        x = np.random.default_rng(n).standard_normal((n, 4, 6)).astype(np.float32)
        cls = np.full((n, 1, 6), 0.5, np.float32)
        want = [np.concatenate([cls, x], axis=1), np.tile(x, (1, 2, 3))]
        for got in _run(spec, {"x": x}):
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w)


INVERTED_RESIDUAL = """
block InvertedResidual(out: int, stride: int = 1, expand: int = 6) {
  input x
  c = shape(x)[1]
  hidden = c * expand
  y = x -> conv2d(hidden, 1, bias=false) -> batch_norm -> relu6
        -> conv2d(hidden, 3, stride=stride, padding=1, groups=hidden, bias=false)
        -> batch_norm -> relu6 -> conv2d(out, 1, bias=false) -> batch_norm
  output z = x + y if stride == 1 and c == out else y
}
model M {
  input x: f32[N, 16, 16, 16]
  output y = x -> InvertedResidual(16) -> InvertedResidual(24, stride=2)
    -> InvertedResidual(24) -> InvertedResidual(32, expand=4)
}
"""


def test_a_block_reads_its_input_channels_in_one_class() -> None:
    """`shape(x)[1]` is a compile-time integer (groups=, widths, the residual's condition) and
    the generated class reads it from its constructor argument, so one class serves all."""
    spec = dslc.compile_source(INVERTED_RESIDUAL)
    src = spec.torch_source()
    assert src.count("class InvertedResidual") == 1
    assert "def __init__(self, in_channels, out, stride=1, expand=6):" in src
    assert "groups=in_channels * expand" in src
    assert "self.condition1 = stride == 1 and in_channels == out" in src
    model = spec.torch_module()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert [c.groups for c in convs] == [96, 96, 144, 96]  # 16*6, 16*6, 24*6, 24*4
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 16)).astype(np.float32)
    torch_out, onnx_out = _run(spec, {"x": x})
    np.testing.assert_allclose(torch_out[0], onnx_out[0], atol=1e-5)


def test_compile_time_lists_index_and_slice() -> None:
    spec = dslc.compile_source(
        "widths = [8, 16, 32]\n"
        "model M { input x: f32[N, 3, 12]\n"
        "  c = shape(x)[-1]  last = widths[-1]  rest = widths[1:]\n"
        "  output y = x -> linear(c + last + rest[0]) }"
    )
    assert str(spec.graph.outputs["y"].type) == "f32[N, 3, 60]"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("x[:, 8]", "position 8 is out of range for dim 1 of size 8"),
        ("x[:, :, 0]", "3 subscripts for a tensor of rank 2"),
        ("x[..., ...]", "at most one `...`"),
        ("x[:, ::0]", "step cannot be 0"),
        ("x[:, 5:2]", "keeps nothing"),
        ("x[5::-1]", "a backward slice of the symbolic dim N"),
        ("x[:, 1.5]", "an index must be an integer"),
        ("x[:, x]", "must be a compile-time integer, not a tensor"),
        ("x[:, N]", "an index must be an integer, got the symbolic dim N"),
        ("shape(x)[2]", "index 2 is out of range for 2 items"),
        ("shape(3)", "shape takes one tensor"),
        ("x -> split([3, -1, -1])", "at most one part may be -1 or symbolic"),
        ("x -> split([3, 4])", "sum to 7 but dim 1"),
        ("x -> split([9, -1])", "leave nothing for -1"),
        ("x -> split(2, axis=0)", "equal parts need a known size"),
        ("x -> unsqueeze(2) -> expand([N, 8, N])", "name a tensor that has it as `like=`"),
        ("x -> expand([4, 3, 8], like=x)", "only a dim of size 1 expands"),
        ("x -> expand([8], like=x)", "has fewer dims than"),
        ("x -> tile([2])", "1 repeats for the rank-2 input"),
    ],
)
def test_errors_name_the_mistake(body: str, message: str) -> None:
    with pytest.raises(dslc.CompileError) as err:
        dslc.compile_source(f"model M {{ input x: f32[N, 8]  output y = {body} }}")
    diag = err.value.diagnostics.items[0]
    assert message in diag.message + (diag.hint or ""), diag.message
    assert diag.span is not None
