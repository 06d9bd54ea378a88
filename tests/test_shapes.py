"""Shape inference with symbolic dims, through the compiler's own rules."""

from __future__ import annotations

import pytest

import dslc
from dslc.ir.types import Sym, dim_add, dim_floordiv, dim_mul


def out_type(body: str, input_type: str = "f32[N, 3, T]") -> str:
    spec = dslc.compile_source(f"model M {{ input x: {input_type}  output y = {body} }}")
    return str(spec.graph.outputs["y"].type)


def test_linear_forms_simplify():
    t = Sym.name("T")
    assert dim_add(dim_add(t, 2), -2) == t
    assert str(dim_mul(dim_add(t, 1), 2)) == "2*T + 2"
    assert str(dim_floordiv(dim_add(t, -2), 2)) == "floor(T/2) - 1"
    assert dim_floordiv(dim_mul(t, 4), 2) == dim_mul(t, 2)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('x -> conv1d(8, 5, padding="same")', "f32[N, 8, T]"),
        ("x -> conv1d(8, 3)", "f32[N, 8, T - 2]"),
        ("x -> max_pool1d(2)", "f32[N, 3, floor(T/2)]"),
        ("x -> max_pool1d(2) -> max_pool1d(2)", "f32[N, 3, floor(floor(T/2)/2)]"),
        ("x -> conv1d(4, 3, stride=2, padding=1)", "f32[N, 4, floor((T + 1)/2)]"),
        ("x -> flatten", "f32[N, 3*T]"),
        ("x -> reshape([N, -1])", "f32[N, 3*T]"),
        ("x -> global_avg_pool", "f32[N, 3]"),
    ],
)
def test_symbolic_shapes(body, expected):
    assert out_type(body) == expected


def test_reshape_keeps_symbols_in_place():
    assert out_type("x -> reshape([N, T, 2, -1])", "f32[N, T, 6]") == "f32[N, T, 2, 3]"
    with pytest.raises(
        dslc.CompileError, match="symbolic dim T must be at position 1 of the input"
    ):
        out_type("x -> reshape([N, T, -1])")


def test_targets_see_model_parameters():
    spec = dslc.compile_source(
        "model M(classes: int = 5) { input x: f32[N, 4]  output y = x -> linear(classes) }\n"
        "train { target t: f32[N, classes]  loss = mse(y, t)  optimizer = adam() }"
    )
    assert str(spec.graph.training.targets[0].type) == "f32[N, 5]"


def test_layers_with_parameters_need_f32():
    with pytest.raises(
        dslc.CompileError, match="linear has f32 parameters, so its input must be f32"
    ):
        dslc.compile_source("model M { input x: f64[N, 4]  output y = x -> linear(2) }")
    # parameter-free ops take any float type
    assert out_type("x -> relu -> softmax", "f64[N, 4]") == "f64[N, 4]"
