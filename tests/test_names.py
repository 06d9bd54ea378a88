"""Every name a spec can write either reaches the generated module legally or is refused at its
line (the reliability issue's name cases): the module then runs, builds its loss, optimizer and
schedule, and no helper it defines is shadowed."""

from __future__ import annotations

import pytest
import torch

import dslc

TRAIN = """
train {
    target t: f32[N, 2]
    loss = mse(y, t) + 1e-4 * l2()
    optimizer = adam(lr=1e-3)
    schedule = cosine(warmup=1)
    epochs = 3
}
"""


def _run(source: str) -> None:
    spec = dslc.compile_source(source, "names.dl")
    ns = spec.torch_namespace()
    model = ns["create_model"]()
    x = torch.randn(3, *[d for d in spec.graph.inputs[0].type.shape[1:]])
    out = model(x)
    out = out if isinstance(out, tuple) else (out,)
    assert all(torch.isfinite(o).all() for o in out)
    if "create_loss" in ns:
        opt = ns["create_optimizer"](model)
        assert ns["create_scheduler"](opt, 2) is not None
        ns["create_loss"]()(out[0], torch.zeros_like(out[0]))
        ns["penalty"](model)


@pytest.mark.parametrize(
    "model",
    [
        "super",
        "min",
        "max",
        "math",
        "__builtins__",
        "float",
        "len",
        "sum",
        "Loss",
        "torch",
        "nn",
        "F",
        "create_model",
        "SelfAttention",
        "class",
        "__debug__",
        "_",
    ],
)
def test_any_model_name_gives_a_working_module(model: str) -> None:
    _run(f"model {model} {{ input x: f32[N, 4]  output y = x -> linear(2) }}" + TRAIN)


@pytest.mark.parametrize(
    "name",
    [
        "float",
        "len",
        "sum",
        "torch",
        "F",
        "nn",
        "self",
        "super",
        "__debug__",
        "X",
        "INPUTS",
        "create_loss",
        "class",
        "math",
    ],
)
def test_any_tensor_name_gives_a_working_module(name: str) -> None:
    source = f"""
    model M {{
        input {name}: f32[N, 4]
        h = {name} -> linear(4) -> relu
        output y = h + {name} -> linear(2)
    }}"""
    _run(source + TRAIN)


def test_names_in_a_language_model_with_helpers() -> None:
    """causal_mask, positional_embedding and l2() use torch helpers: a model named float or
    sum must not shadow them."""
    for model in ("float", "sum", "len"):
        source = f"""
        model {model} {{
            input tokens: i64[N, T]
            e = tokens -> embedding(16, 8) -> positional_embedding(8)
            scores = matmul(e, e -> transpose(1, 2)) -> causal_mask -> softmax
            output y = matmul(scores, e) -> linear(2)
        }}"""
        spec = dslc.compile_source(source, "lm.dl")
        out = spec.torch_module()(torch.randint(0, 16, (2, 5)))
        assert out.shape == (2, 5, 2) and torch.isfinite(out).all()


def test_a_block_named_like_a_layer() -> None:
    """A block fc1 beside layers fc1, fc2, ...: every module gets its own attribute."""
    source = """
    block fc1 { input x  output y = x -> linear(4) }
    model M {
        input x: f32[N, 4]
        output y = x -> linear(4) -> fc1 -> linear(4) -> fc1 -> linear(2)
    }"""
    spec = dslc.compile_source(source, "blocks.dl")
    model = spec.torch_module()
    assert sum(p.numel() for p in model.parameters()) == spec.param_count
    assert model(torch.randn(2, 4)).shape == (2, 2)


@pytest.mark.parametrize("name", ["forward", "training", "to", "class", "__init__"])
def test_a_layer_name_that_would_break_the_module_is_refused_at_its_line(name: str) -> None:
    source = f"model M {{ input x: f32[N, 4]\n  output y = x -> linear(2) as {name} }}"
    with pytest.raises(dslc.CompileError) as err:
        dslc.compile_source(source, "bad.dl")
    (d,) = err.value.diagnostics.items
    assert d.span is not None and d.span.line == 2 and f"'{name}'" in d.message


def test_a_layer_named_twice_is_refused() -> None:
    source = "model M { input x: f32[N, 4]\n  output y = x -> linear(4) as a -> linear(2) as a }"
    with pytest.raises(dslc.CompileError) as err:
        dslc.compile_source(source, "twice.dl")
    assert "names two layers" in err.value.diagnostics.items[0].message


@pytest.mark.parametrize(
    "filename",
    [
        'x""";__import__("os").system("touch INJECTED");"""y.dl',
        "a\\N.dl",
        "C:\\Users\\me.dl",
        "quote'\".dl",
        "new\nline.dl",
    ],
)
def test_a_spec_file_name_cannot_inject_code(tmp_path, monkeypatch, filename: str) -> None:
    """The file name reaches the generated module's docstring: escaped, it runs nothing and
    is never a syntax error."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / filename
    path.write_text("model M { input x: f32[N, 4]  output y = x -> linear(2) }")
    ns = dslc.load(path).torch_namespace()
    assert ns["create_model"]()(torch.randn(1, 4)).shape == (1, 2)
    assert not (tmp_path / "INJECTED").exists()


def test_a_tensor_named_like_a_helper_function_does_not_hide_it() -> None:
    source = """
    model M {
        input masked_mean: f32[N, T, 4]
        input m: bool[N, T]
        h = masked_mean -> relu
        output y = masked_mean(h, m, axis=1) + masked_mean(masked_mean, m, axis=1)
    }"""
    model = dslc.compile_source(source, "helper.dl").torch_module()
    out = model(torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))
    assert out.shape == (2, 4)
