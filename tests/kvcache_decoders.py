"""Random small decoders as .dl text, for tests/test_kvcache_fuzz.py: hypothesis draws a few
stages, each reading tensors (N, T, width) of a pool and adding one, and the logits read every
tensor nothing else reads.

The stages: linear, layer_norm, rms_norm, activations, softmax over the features, dropout, a
positional embedding, shape no-ops, a repeated stage (`(linear(8) -> gelu) * 2`); +, -, * and
scalar scales; split, concat and subscripts along the features; heads cut (reshape and
transpose or permute, unsqueeze) and put back, with an op over the heads between; attention as
one op, scaled_dot_product_attention, attention by hand over heads (matmul, causal_mask, softmax,
matmul, or the values' product transposed, (w v)^T = v^T w^T) and over one head of rank 3 whose
queries, keys and values may be tensors of the pool as they are; a block holding one of those,
called once or repeated; and what mixes positions (mean, sum or max over the sequence, softmax
over it or over the queries, conv1d along time, lstm, `x[:, -1]`, concat along time, a reshape
merging N and T), which marks the decoder `poisoned`. Around the causal mask only ops that keep a
later key at -inf (before the softmax) or at weight 0 (after) are drawn, but with known_bugs.
Each attention's causality is a marker, <maskI> or <causalI>, so that Decoder.source can write
the spec with one attention no longer causal."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import hypothesis.strategies as st

VOCAB, CONTEXT, WIDTHS = 16, 32, (8, 12)
MARK = re.compile(r"<(mask|causal)(\d+)>")
TALLY: Counter = Counter()  # the stages drawn, and the reasons for refusals


@dataclass
class Tensor:
    name: str
    width: int
    raw: bool = False  # a graph input, a block's output or a repeated stage's: FOUND (the test)


@dataclass
class Gen:
    """One spec being written: its model's lines, its blocks, the pool, the attention markers."""

    draw: st.DrawFn
    known_bugs: bool
    lines: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    pool: list[Tensor] = field(default_factory=list)
    marks: int = 0
    poisoned: bool = False
    names: int = 0

    def pick(self, width: int | None = None, kept: bool = False) -> Tensor:
        """A tensor of the pool, the newest more often; `kept`: read as a key or value itself."""
        fits = [t for t in self.pool if width in (None, t.width)]
        if kept and not self.known_bugs:
            fits = [t for t in fits if not t.raw]
        if not fits:
            return self.assign(f"{self.pool[-1].name} -> linear({width or 8})", width or 8)
        return fits[-1 - self.draw(st.integers(0, min(2, len(fits) - 1)))]

    def fresh(self, base: str = "h") -> str:
        self.names += 1
        return f"{base}{self.names}"

    def assign(self, expr: str, width: int, raw: bool = False, base: str = "h") -> Tensor:
        t = Tensor(self.fresh(base), width, raw)
        self.lines.append(f"    {t.name} = {expr}")
        self.pool.append(t)
        return t

    def let(self, expr: str, base: str) -> str:
        """A named intermediate that stays out of the pool."""
        name = self.fresh(base)
        self.lines.append(f"    {name} = {expr}")
        return name

    def mark(self, kind: str) -> str:
        self.marks += 1
        return f"<{kind}{self.marks - 1}>"

    def one_of(self, *options):
        return self.draw(st.sampled_from(options))

    def consume(self, t: Tensor) -> None:
        """Without known_bugs nothing reads a repeated stage's input after it (FOUND,
        repeated_stage_input_read_after)."""
        if not self.known_bugs:
            self.pool.remove(t)


def heads(g: Gen, width: int) -> tuple[int, int]:
    h = g.one_of(*[h for h in (1, 2, 3, 4) if width % h == 0 and width // h >= 2])
    return h, width // h


def cut_heads(g: Gen, name: str, h: int, e: int) -> str:
    """(N, T, h * e) -> (N, h, T, e)."""
    if h == 1 and g.draw(st.booleans()):
        return f"{name} -> unsqueeze(1)"
    move = g.one_of("transpose(1, 2)", "permute([0, 2, 1, 3])")
    return f"{name} -> reshape([N, T, {h}, {e}]) -> {move}"


def pointwise(g: Gen) -> None:
    t, ops = g.pick(), []
    width = t.width
    for _ in range(g.draw(st.integers(1, 3))):
        op = g.one_of(
            "linear",
            "layer_norm",
            "rms_norm",
            "gelu",
            'gelu(approximate="tanh")',
            "silu",
            "relu",
            "softmax",
            "softmax(axis=-1)",
            "dropout(0.1)",
            "unsqueeze(2) -> squeeze(2)",
            "identity",
            f"positional_embedding({CONTEXT})",
        )
        if op == "linear":
            width = g.one_of(*WIDTHS)
            op = f"linear({width}{g.one_of('', ', bias=false')})"
        ops.append(op)
    if width == t.width and g.draw(st.integers(0, 4)) == 0:  # a repeated stage
        g.assign(f"{t.name} -> ({' -> '.join(ops)}) * 2", width, raw=True)
        return g.consume(t)
    g.assign(f"{t.name} -> {' -> '.join(ops)}", width)


def arithmetic(g: Gen) -> None:
    a = g.pick()
    b = g.pick(a.width)
    form = g.one_of(
        "{a} + {b}",
        "{a} * {b}",
        "({a} + {b}) * 0.5",
        "{a} - {b} * 2.0",
        "{a} * 0.7",
        "{a} * ({a} -> mean(axis=-1, keepdim=true))",
    )
    g.assign(form.format(a=a.name, b=b.name), a.width)


def features(g: Gen) -> None:
    """Split, concat and subscripts along the features."""
    t = g.pick()
    w, kind = t.width, g.one_of("split", "sizes", "subscript", "concat")
    if kind == "split" and w % 2 == 0:
        a, b = g.fresh("a"), g.fresh("b")
        g.lines.append(f"    {a}, {b} = {t.name} -> split(2{g.one_of('', ', axis=2')})")
        g.assign(f"[{b}, {a}] -> concat(axis={g.one_of('-1', '2')})", w)
    elif kind == "sizes":
        a, b, k = g.fresh("a"), g.fresh("b"), g.draw(st.integers(1, w - 1))
        g.lines.append(f"    {a}, {b} = {t.name} -> split([{k}, {w - k}], axis=-1)")
        g.assign(f"[{b}, {a}, {b}] -> concat(axis=-1)", w + w - k)
    elif kind == "subscript":
        lo = g.draw(st.integers(0, w - 2))
        hi = g.draw(st.integers(lo + 2, w))
        x = t.name
        forms = (
            f"{x}[..., {lo}:{hi}]",
            f"{x}[:, :, {lo}:{hi}]",
            f"{x}[..., {hi - 1}:{lo - 1 if lo else ''}:-1]",
        )
        g.assign(g.one_of(*forms), hi - lo)
    else:
        u = g.pick()
        g.assign(f"[{t.name}, {u.name}] -> concat(axis=2)", w + u.width)


def per_head(g: Gen) -> None:
    """Heads cut and put back, with an op over the heads or the head's features between."""
    t = g.pick()
    h, e = heads(g, t.width)
    x = g.let(cut_heads(g, t.name, h, e), "hd")
    op = g.one_of(
        f"{x} * 0.5",
        f"{x} -> softmax(axis=1)",
        f"{x} -> rms_norm",
        f"{x} * ({x} -> mean(axis=1, keepdim=true))",
        f"{x} -> softmax(axis=-1)",
    )
    y = g.let(op, "hd")
    back = g.one_of("transpose(1, 2)", "permute([0, 2, 1, 3])")
    g.assign(f"{y} -> {back} -> reshape([N, T, {t.width}])", t.width)


def projections(g: Gen, t: Tensor, h: int, e: int) -> tuple[str, str, str]:
    """Queries, keys and values (N, heads, T, head) from t, as decoders write them."""
    style, w = g.one_of("fused", "fused", "separate", "fused_heads", "subscripts"), h * e
    bias = g.one_of("", ", bias=false")
    if style == "fused_heads":
        q, k, v = g.fresh("q"), g.fresh("k"), g.fresh("v")
        move = g.one_of("transpose(1, 2)", "permute([0, 2, 1, 3])")
        g.lines.append(
            f"    {q}, {k}, {v} = {t.name} -> linear({3 * w}{bias}) "
            f"-> reshape([N, T, {3 * h}, {e}]) -> {move} -> split(3, axis=1)"
        )
        return q, k, v
    if style == "fused":
        q, k, v = g.fresh("q"), g.fresh("k"), g.fresh("v")
        g.lines.append(f"    {q}, {k}, {v} = {t.name} -> linear({3 * w}{bias}) -> split(3)")
    elif style == "separate":
        q, k, v = (g.let(f"{t.name} -> linear({w}{bias})", n) for n in "qkv")
    else:  # subscripts of one projection
        u = g.let(f"{t.name} -> linear({3 * w}{bias})", "qkv")
        q, k, v = (g.let(f"{u}[..., {i * w}:{(i + 1) * w}]", n) for i, n in enumerate("qkv"))
    qh, kh, vh = (g.let(cut_heads(g, n, h, e), f"{n[0]}h") for n in (q, k, v))
    extra = g.one_of("", "", " * 0.5", " -> rms_norm", " -> layer_norm", " -> gelu")
    if extra:
        kh = g.let(f"{kh}{extra}", "kh")
    return qh, kh, vh


def merge(g: Gen, mixed: str, h: int, e: int) -> None:
    proj = g.one_of("", f" -> linear({h * e})")
    back = g.one_of(f"reshape([N, T, {h * e}])", "flatten(start=2)")
    g.assign(f"{mixed} -> transpose(1, 2) -> {back}{proj}", h * e)


def attention_op(g: Gen) -> None:
    t = g.pick()
    h, _ = heads(g, t.width)
    g.assign(f"{t.name} -> attention({h}, causal={g.mark('causal')})", t.width)


def sdpa(g: Gen) -> None:
    t = g.pick()
    h, e = heads(g, t.width)
    q, k, v = projections(g, t, h, e)
    scale = g.one_of("", ", scale=0.5")
    causal = g.mark("causal")
    mixed = g.let(f"scaled_dot_product_attention({q}, {k}, {v}, causal={causal}{scale})", "o")
    merge(g, mixed, h, e)


def weights(g: Gen, scores: str, queries: str) -> str:
    """Scores scaled, masked and softmaxed over the keys, with ops around that keep a later key
    at -inf (before the softmax) or weight 0 (after); `queries`: the queries' axis."""
    if g.draw(st.booleans()):
        scores = g.let(f"{scores} * {g.one_of('0.5', '2.0')}", "s")
    s = g.let(f"{scores}{g.mark('mask')}", "s")
    before = [" * 0.5", " + 1.0", f" + {s}"] + [" -> relu", " -> sigmoid"] * g.known_bugs
    if g.draw(st.integers(0, 2)) == 0:
        s = g.let(f"{s}{g.one_of(*before)}", "s")
    axis = g.one_of(*["-1"] * 6, "3" if queries == "-2" else "2", "keys", queries)
    g.poisoned |= axis == queries  # a softmax over the queries mixes the new positions
    if axis == "keys":  # over the keys of the scores transposed
        w = g.let(f"{s} -> transpose(-2, -1) -> softmax(axis={queries}) -> transpose(-2, -1)", "w")
    else:
        w = g.let(f"{s} -> softmax" + ("" if axis == "-1" else f"(axis={axis})"), "w")
    after = [" * 0.9", " -> dropout(0.1)", " -> relu", f" * {w}"]
    after += [" + 0.5", " -> softmax", f" * ({w} -> mean(axis=-1, keepdim=true))"] * g.known_bugs
    if g.draw(st.integers(0, 2)) == 0:
        w = g.let(f"{w}{g.one_of(*after)}", "w")
    return w


def by_hand(g: Gen) -> None:
    """Heads, keys transposed, scores masked and softmaxed, values mixed."""
    t = g.pick()
    h, e = heads(g, t.width)
    q, k, v = projections(g, t, h, e)
    move = g.one_of("transpose(-2, -1)", "transpose(2, 3)", "permute([0, 1, 3, 2])")
    kt = g.let(f"{k} -> {move}", "kt")
    if g.draw(st.integers(0, 3)) == 0:
        q = g.let(f"{q} * 0.5", "q")
    w = weights(g, f"matmul({q}, {kt})", "-2")
    if g.draw(st.integers(0, 3)) == 0:  # (w v)^T = v^T w^T
        vt, wt = f"{v} -> transpose(-2, -1)", f"{w} -> transpose(-2, -1)"
        mixed = g.let(f"matmul({vt}, {wt}) -> transpose(-2, -1)", "o")
    else:
        mixed = g.let(f"matmul({w}, {v})", "o")
    merge(g, mixed, h, e)


def one_head(g: Gen) -> None:
    """Rank 3, no heads: queries, keys and values projected, or tensors of the pool as such."""
    if g.draw(st.booleans()):
        t = g.pick()
        q, k, v = g.fresh("q"), g.fresh("k"), g.fresh("v")
        g.lines.append(f"    {q}, {k}, {v} = {t.name} -> linear({3 * t.width}) -> split(3)")
        width = t.width
    else:
        key = g.pick(kept=True)
        q, k, width = g.pick(key.width).name, key.name, key.width
        v = g.pick(width, kept=True).name
    w = weights(g, f"matmul({q}, {k} -> transpose(1, 2))", "1")
    g.assign(f"matmul({w}, {v})", width)


def block(g: Gen) -> None:
    """An attention stage inside a block, called once or repeated (nn.ModuleList, a loop)."""
    t = g.pick()
    inner = Gen(g.draw, g.known_bugs, pool=[Tensor("x", t.width, t.raw)], marks=g.marks)
    g.draw(st.sampled_from([attention_op, sdpa, by_hand, one_head]))(inner)
    last = inner.pool[-1]
    out = f"{last.name} -> linear({t.width})" if last.width != t.width else last.name
    residual = "x + " if g.draw(st.booleans()) else ""
    name = f"B{len(g.blocks)}"
    g.blocks.append(
        "\n".join(
            [f"block {name} {{", f"    input x: f32[N, T, {t.width}]", *inner.lines]
            + [f"    output y = {residual}{out}", "}", "", ""]
        )
    )
    g.marks, g.poisoned = inner.marks, g.poisoned or inner.poisoned
    times = g.one_of("", " * 2")
    g.assign(f"{t.name} -> {name}{times}", t.width, raw=True)
    if times:
        g.consume(t)


def mixes_positions(g: Gen) -> None:
    """What a step cannot compute: refused wherever it reads the sequence."""
    t, g.poisoned = g.pick(), True
    x, w = t.name, t.width
    forms = [
        f"{x} - ({x} -> mean(axis=1, keepdim=true))",
        f"{x} * ({x} -> sum(axis=1, keepdim=true))",
        f"{x} - ({x} -> max(axis=1, keepdim=true))",
        f"{x} -> softmax(axis=1)",
        f"{x} -> transpose(1, 2) -> conv1d({w}, 3, padding=1) -> transpose(1, 2)",
        f"{x} -> lstm({w})",
        f"{x} + ({x}[:, -1] -> unsqueeze(1))",
    ]
    if w % 2 == 0:  # over the sequence once the heads are cut: axis 2
        forms.append(
            f"{x} -> reshape([N, T, 2, {w // 2}]) -> transpose(1, 2) -> softmax(axis=2) "
            f"-> transpose(1, 2) -> reshape([N, T, {w}])"
        )
    g.assign(g.one_of(*forms), w)


# Each stage reads tensors of the pool and adds one; drawn with these weights.
STAGES = [
    *[pointwise] * 4,
    *[arithmetic] * 3,
    *[features] * 2,
    per_head,
    *[attention_op] * 2,
    *[sdpa] * 3,
    *[by_hand] * 4,
    *[one_head] * 3,
    *[block] * 2,
    mixes_positions,
]
ATTENTION = [attention_op, sdpa, by_hand, one_head, block]


@dataclass
class Decoder:
    text: str  # with <maskI> and <causalI> where attention I is made causal
    marks: int
    poisoned: bool

    def source(self, drop: int | None = None) -> str:
        """The spec, every attention causal but `drop`."""

        def put(m: re.Match) -> str:
            causal = int(m.group(2)) != drop
            if m.group(1) == "mask":
                return " -> causal_mask" if causal else ""
            return "true" if causal else "false"

        return MARK.sub(put, self.text)


@st.composite
def decoders(draw: st.DrawFn, known_bugs: bool = False) -> Decoder:
    g = Gen(draw, known_bugs)
    width, floats = draw(st.sampled_from(WIDTHS)), draw(st.integers(0, 4)) == 0
    g.lines.append(f"    input {'x: f32[N, T, 8]' if floats else 'tokens: i64[N, T]'}")
    if floats:
        g.pool.append(Tensor("x", 8, raw=True))
    else:
        g.assign(f"tokens -> embedding({VOCAB}, {width})", width, base="x")
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["", ', kind="sinusoidal"']))
        g.assign(f"{g.pool[-1].name} -> positional_embedding({CONTEXT}{kind})", g.pool[-1].width)
    stages = draw(st.lists(st.sampled_from(STAGES), min_size=1, max_size=4))
    if not any(s in ATTENTION for s in stages):  # mostly decoders: one attention at least
        stages.insert(draw(st.integers(0, len(stages))), draw(st.sampled_from(ATTENTION)))
    for stage in stages:
        stage(g)
        TALLY[stage.__name__] += 1
    g.lines.append(f"    output y = {output(g)}")
    text = "".join(g.blocks) + "model M {\n" + "\n".join(g.lines) + "\n}\n"
    return Decoder(text, g.marks, g.poisoned)


def output(g: Gen) -> str:
    """Logits from every tensor of the pool nothing reads, joined along the features; now and
    then joined along time or merged with the batch instead (refused)."""
    rhs = [line.split(" = ", 1)[1] for line in g.lines if " = " in line]
    read = {n for r in rhs for n in re.findall(r"\b[hx]\d*\b", r)}
    leaves = [t for t in g.pool if t.name not in read]
    if len(leaves) > 1:
        joined = ", ".join(t.name for t in leaves)
        leaves = [g.assign(f"[{joined}] -> concat(axis=-1)", sum(t.width for t in leaves))]
    last = leaves[0] if leaves else g.pool[-1]
    end = g.draw(st.sampled_from([*[""] * 8, "time", "batch"]))
    g.poisoned |= bool(end)
    x = {
        "": last.name,
        "time": f"[{last.name}, {last.name}] -> concat(axis=1)",
        "batch": f"{last.name} -> reshape([-1, {last.width}])",
    }[end]
    norm = g.draw(st.sampled_from(["", "layer_norm -> ", "rms_norm -> "]))
    return f"{x} -> {norm}linear({VOCAB})"
