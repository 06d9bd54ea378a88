"""Repetition in the generated PyTorch: `stage * n` is an nn.ModuleList and a loop, `* 0` the
identity (a depth parameter may be 0), and blocks whose instances repeat a stage different
numbers of times, none included, still compute what the flat graph does."""

from __future__ import annotations

import torch

import dslc

LAYER = "block Layer(width: int) { input x  output y = x -> linear(width) -> relu }\n"


def test_zero_copies_are_the_identity() -> None:
    spec = dslc.compile_source(
        LAYER + "model M(depth: int = 0) { input x: f32[N, 4]\n"
        "  output y = x -> Layer(4) * depth -> (linear(4) -> relu) * 0 }"
    )
    assert spec.param_count == 0 and not spec.graph.nodes
    x = torch.randn(3, 4)
    assert torch.equal(spec.torch_module()(x), x)


def test_blocks_repeating_a_stage_zero_or_more_times() -> None:
    spec = dslc.compile_source(
        LAYER + "block Stack(depth: int) { input x  output y = x -> Layer(4) * depth }\n"
        "model M { input x: f32[N, 4]  output y = x -> Stack(0) -> Stack(2) -> Stack(1) }"
    )
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    assert sum(p.numel() for p in model.parameters()) == spec.param_count == 3 * 20
    x = torch.randn(5, 4)
    h = x
    for layer in [*model.stack2.layers, *model.stack3.layers]:
        h = torch.relu(layer.fc1(h))
    assert torch.allclose(model(x), h)


def test_a_repetition_of_nothing_is_the_identity() -> None:
    """Found by the fuzzer: `(abs * 0) * 1` wrote a `for` loop with an empty body."""
    spec = dslc.compile_source(
        "model M { input x: f32[N, 4]  h = x -> abs  output y = h -> abs * 0 * 1 }"
    )
    x = torch.randn(2, 4)
    assert torch.equal(spec.torch_module()(x), x.abs())


def test_a_repeated_block_takes_a_mask_every_copy_receives() -> None:
    """`x -> Layer(4, mask=mask) * 3` (a BERT encoder's stack): tensor inputs by keyword, for
    blocks and ops alike; the loop passes the mask to every copy."""
    spec = dslc.compile_source(
        "block Layer(heads: int) { input x  input mask\n"
        "  output y = x + (x -> layer_norm -> attention(heads, mask=mask)) }\n"
        "model Encoder { input tokens: i64[N, T]  input mask: bool[N, T]\n"
        "  output y = tokens -> embedding(50, 16) -> Layer(4, mask=mask) * 3 }"
    )
    assert "for layer in self.layers:\n            y = layer(y, mask)" in spec.torch_source()
    model = spec.torch_module().eval()
    tokens = torch.randint(0, 50, (2, 5))
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    out = model(tokens, mask)
    changed = tokens.clone()
    changed[1, 3:] = 7  # padding the mask hides: the real tokens' outputs do not move
    assert torch.allclose(model(changed, mask)[1, :2], out[1, :2], atol=1e-6)
