"""The limits of the language (dslc/ir/limits.py, docs/limits.md): each spec beyond one is a
located error, found fast and without building anything large. The small cases are also in
tests/errors/; these are the ones too large to keep as files, and the limits' edges."""

from __future__ import annotations

import time

import pytest

import dslc
from dslc.ir import limits
from dslc.ir.limits import MAX_ATTR_INT, MAX_ELEMENTS, MAX_INT, elements, number_text
from dslc.ir.types import Sym, TensorType
from dslc.ops.base import REGISTRY

BIG = "1" + "0" * 400  # 10**400: no float holds it
MODEL = "model M {{ input x: f32[N, 4]  output y = {} }}\n"
TRAIN = (
    "model M {{ input x: f32[N, 4]  output y = x -> linear(2) }}\n"
    "train {{ target t: f32[N, 2]  loss = {}  optimizer = {} }}\n"
)


def squares(n: int) -> str:
    """c1 = 10 * 10, c2 = c1 * c1, ...: c_n is 10**(2**n)."""
    return "c1 = 10 * 10\n" + "".join(f"c{i} = c{i - 1} * c{i - 1}\n" for i in range(2, n + 1))


def block_tree(depth: int) -> str:
    """b_k calls b_(k-1) twice: 2**depth nodes from one call of b_depth."""
    blocks = ["block b1 { input x  output y = x -> relu }"] + [
        f"block b{k} {{ input x  output y = x -> b{k - 1} -> b{k - 1} }}"
        for k in range(2, depth + 1)
    ]
    return "\n".join(blocks) + "\n" + MODEL.format(f"x -> b{depth}")


CASES = {
    "a 8192-digit size": squares(13) + MODEL.format("x -> linear(c13)"),
    "squared 30 times": squares(30) + MODEL.format("x -> linear(c30)"),
    "a tensor times 10**400": MODEL.format(f"x * {BIG}"),
    "leaky_relu(10**400)": MODEL.format(f"x -> leaky_relu({BIG})"),
    "lr=10**400": TRAIN.format("mse(y, t)", f"sgd(lr={BIG})"),
    "init values of 10**400": MODEL.format(f"x -> linear(2, init=[[{BIG}, 1, 1, 1]])"),
    "init=1e39": MODEL.format("x -> linear(2, init=1e39)"),
    "a loss weight of 1e400": TRAIN.format("1e400 * mse(y, t)", "sgd(lr=0.1)"),
    "a loss weight of 1e60": TRAIN.format("1e30 * (1e30 * mse(y, t))", "sgd(lr=0.1)"),
    "a loss divided by 1e-300": TRAIN.format("mse(y, t) / 1e-300", "sgd(lr=0.1)"),
    "stride=2**63": MODEL.format(
        "x -> reshape([-1, 1, 2, 2]) -> conv2d(1, 1, stride=9223372036854775808)"
    ),
    "flatten beyond int64": (
        "model M { input x: f32[N, 2147483647, 2147483647, 2147483647]  output y = x -> flatten }"
    ),
    "linear over 2**31-1 features": (
        "model M { input x: f32[N, 2147483647]  output y = x -> linear(1) }"
    ),
    "embedding(2**31-1, 1)": (
        "model M { input x: i64[N, 4]  output y = x -> embedding(2147483647, 1) }"
    ),
    "a sinusoidal table of 2**31-1 rows": (
        "model M { input x: f32[N, 4, 8]  output y = x -> "
        'positional_embedding(2147483647, kind="sinusoidal") }'
    ),
    "adaptive_avg_pool1d(3) over 2e9": (
        "model M { input x: f32[N, 1, 2000000000]  output y = x -> adaptive_avg_pool1d(3) }"
    ),
    "upsample to 2e9 x 2e9": (
        "model M { input x: f32[N, 1, 4, 4]  output y = x -> "
        "upsample(size=[2000000000, 2000000000]) }"
    ),
    "local_response_norm over 20000 channels": (
        "model M { input x: f32[N, 20000, 1, 1]  output y = x -> local_response_norm(2) }"
    ),
    "conv_transpose2d stride 2e9": (
        "model M { input x: f32[N, 1, 4, 4]  output y = x -> "
        "conv_transpose2d(1, 3, stride=2000000000, output_size=5) }"
    ),
    "10**8 nodes by repetition": MODEL.format("x -> (relu * 10000) * 10000"),
    "a block tree 30 deep": block_tree(30),
    "overflow to inf": MODEL.format("x * (1e300 * 1e300)"),
}


def compile_error(source: str, params: dict | None = None) -> dslc.CompileError:
    with pytest.raises(dslc.CompileError) as info:
        dslc.compile_source(source, "limits.dl", params)
    return info.value


# Not a timing test: before the limits these cases ran for minutes or exhausted the memory, so
# a bound this far above the measured times (0.3-1.4 s on a busy 2-core machine, docs/limits.md)
# catches a hang without failing on a slow machine.
HANG = 30.0


@pytest.mark.parametrize("case", list(CASES))
def test_beyond_a_limit_is_a_located_error_without_building_it(case):
    start = time.perf_counter()
    err = compile_error(CASES[case])
    assert time.perf_counter() - start < HANG
    (d,) = err.diagnostics.items
    assert d.span is not None and d.span.line >= 1 and d.span.column >= 1, d.render(None)
    assert "Traceback" not in d.render(CASES[case])


def test_a_block_called_again_is_refused_before_it_expands(monkeypatch):
    """A block called as before will make as many nodes: the budget refuses its second call at
    once, at the call."""
    monkeypatch.setattr(limits, "MAX_NODES", 40)
    source = (
        "block B { input x  output y = x -> relu * 30 }\n"
        "model M { input x: f32[N, 4]  a = x -> B  output y = a -> B }"
    )
    (d,) = compile_error(source).diagnostics.items
    assert "expands to more than 40 nodes" in d.message
    assert (d.span.line, d.span.column) == (2, source.splitlines()[1].rindex("B") + 1)


def test_the_node_limit_is_reported_once(monkeypatch):
    monkeypatch.setattr(limits, "MAX_NODES", 5)
    lines = "".join(f"  h{i} = h{i - 1} -> relu\n" for i in range(1, 20))
    source = f"model M {{\n  input h0: f32[N, 4]\n{lines}  output y = h19 }}"
    (d,) = compile_error(source).diagnostics.items
    assert d.span.line == 8  # the sixth node, h6


def test_a_model_at_the_node_limit_compiles(monkeypatch):
    monkeypatch.setattr(limits, "MAX_NODES", 12)
    spec = dslc.compile_source(MODEL.format("x -> (relu * 3) * 4"))
    assert len(spec.graph.nodes) == 12
    monkeypatch.setattr(limits, "MAX_NODES", 11)
    (d,) = compile_error(MODEL.format("x -> (relu * 3) * 4")).diagnostics.items
    assert "repetition expands to 4 x 3" in d.message


def test_literal_lists_are_bounded(monkeypatch):
    monkeypatch.setattr(limits, "MAX_LIST_VALUES", 8)
    ok = MODEL.format("x -> linear(2, init=[[1, 2, 3, 4], [5, 6, 7, 8]])")
    assert dslc.compile_source(ok).param_count == 10
    many = MODEL.format("x -> linear(2, init=[[1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9]])")
    (d,) = compile_error(many).diagnostics.items
    assert "more than 8 numbers" in d.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("x -> linear(w)", "linear: out_features must be within dslc's limit"),
        ("x * w", "float32's range, got an integer of 5,001 digits"),
        ("x -> linear(w * 2)", "an integer of 5,001 digits is beyond"),
        ("x -> reshape([-1, w])", "must be within dslc's limit of ±2,147,483,647"),
    ],
)
def test_a_huge_model_parameter_is_a_located_error(body, message):
    """--param values bypass the literals' check: every use of one is checked."""
    source = f"model M(w: int = 1) {{ input x: f32[N, 4]  output y = {body} }}"
    (d,) = compile_error(source, {"w": 10**5000}).diagnostics.items
    assert message in d.message and d.span is not None


def test_a_huge_model_parameter_in_a_type_is_a_located_error():
    source = "model M(w: int = 1) { input x: f32[N, w]  output y = x -> relu }"
    (d,) = compile_error(source, {"w": 10**5000}).diagnostics.items
    assert "got an integer of 5,001 digits" in d.message


def test_the_largest_specs_stay_valid():
    """GPT-2 small's 50,257 x 768 embedding, VGG-16's 25,088 x 4,096 linear."""
    assert dslc.load("specs/gpt2_small.dl", {"layers": 1}).param_count > 38_000_000
    assert dslc.load("specs/vgg16.dl").param_count == 138_357_544


def test_elements_counts_symbolic_dims_at_their_smallest():
    n, t = Sym.name("N"), Sym.name("T")
    assert elements(TensorType("f32", (n, 3, 4))) == 12
    assert elements(TensorType("f32", (n, Sym((("T", 2),), 1)))) == 3
    assert elements(TensorType("f32", (Sym(text="floor(T/2)"), 5))) == 5
    assert elements((2, t)) == 2


def test_number_text_never_prints_a_huge_integer():
    assert number_text(12345) == "12345"
    assert number_text(12345, grouped=True) == "12,345"
    assert number_text(10**8192) == "an integer of 8,193 digits"
    assert number_text(-(10**31) + 1) == "a negative integer of 31 digits"
    assert number_text(10**31) == "an integer of 32 digits"


def test_attribute_bounds():
    stride = next(a for a in REGISTRY["conv2d"].attrs if a.name == "stride")
    assert stride.coerce("conv2d", [MAX_ATTR_INT]) == (MAX_ATTR_INT,)
    with pytest.raises(dslc.diagnostics.SpecError, match="integer attribute"):
        stride.coerce("conv2d", [MAX_ATTR_INT + 1])
    init = next(a for a in REGISTRY["linear"].attrs if a.name == "init")
    with pytest.raises(dslc.diagnostics.SpecError, match="float32's range"):
        init.coerce("linear", 10**39)  # an int, as a --param would give it
    assert MAX_ELEMENTS < 2**31 and MAX_INT == 2**63 - 1


def test_ops_declare_the_constant_tables_their_onnx_export_builds():
    x = TensorType("f32", (Sym.name("N"), 6, 10, 7))
    pool = REGISTRY["adaptive_avg_pool2d"]
    assert pool.tables([x], {"output_size": (3, 7)}) == {"avg2": (3, 10)}
    assert pool.tables([x], {"output_size": (1, 1)}) == {}  # GlobalAveragePool: no table
    assert pool.tables([x], {"output_size": (5, 7)}) == {}  # AveragePool: 5 tiles 10
    seq = TensorType("f32", (Sym.name("N"), 16, 64))
    pos = REGISTRY["positional_embedding"]
    assert pos.tables([seq], {"max_len": 512, "kind": "sinusoidal"}) == {"table": (512, 64)}
    assert pos.tables([seq], {"max_len": 512, "kind": "learned"}) == {}  # a parameter instead
    lrn = REGISTRY["local_response_norm"]
    assert lrn.tables([x], {"size": 2}) == {"window": (6, 6)}
    assert lrn.tables([x], {"size": 3}) == {}  # onnxruntime's LRN


@pytest.mark.parametrize(
    ("source", "line", "what"),
    [
        (
            "model M { input x: f32[N, 4]  output y = x -> relu }\n" + "# a comment\n" * 30_000,
            20_001,
            "30,002 lines",
        ),
        (
            "model M { input x: f32[N, 4]  output y = x -> linear(2, init=["
            + ", ".join(["1.0"] * 300_000)
            + "]) }",
            1,
            "characters",
        ),
    ],
)
def test_a_spec_beyond_the_text_limits_is_refused_before_parsing(source, line, what):
    """A 100,000-line spec took 17 s to parse; one past the limits is refused at once."""
    start = time.perf_counter()
    (d,) = compile_error(source).diagnostics.items
    assert time.perf_counter() - start < HANG
    assert d.span is not None and d.span.line == line and what in d.message
