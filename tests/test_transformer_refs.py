"""specs/vit_b_16.dl and specs/bert_base.dl equal their reference implementations under the
same weights: torchvision's VisionTransformer (tests/reference.py loads torchvision) and
Hugging Face's BertModel, built from a BertConfig with random weights (nothing is downloaded).
The weights are copied by an explicit name mapping; the two models then run in eval mode on the
same inputs. Each comparison runs at a small configuration of the same spec (`params`), and once
at full size, where the parameter counts are also checked against the reference's."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch
from conftest import ROOT, TEST_PARAMS
from reference import torchvision_models

import dslc

VIT_SMALL = TEST_PARAMS["vit_b_16"]  # torchvision's VisionTransformer takes the same names
BERT_SMALL = {k: v for k, v in TEST_PARAMS["bert_base"].items() if k != "pooler"}


def _ours(name: str, params: dict[str, object]) -> torch.nn.Module:
    torch.manual_seed(0)
    return dslc.load(ROOT / "specs" / f"{name}.dl", params).torch_module().eval()


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-5) -> None:
    """Equal up to float32 rounding: |got - want| <= rtol * max|want| (at least rtol)."""
    bound = rtol * max(1.0, float(want.abs().max()))
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= bound, float((got - want).abs().max())


# --- ViT-B/16 against torchvision ----------------------------------------------------------------

# dslc's key -> torchvision's: the spec takes torchvision's names except for the repetition's
# copies (`layers.0`, torchvision's `layers.encoder_layer_0`) and the attention's projections.
_VIT_RENAMES = [
    (r"^encoder\.layers\.(\d+)\.", r"encoder.layers.encoder_layer_\1."),
    (r"self_attention\.qkv\.(weight|bias)$", r"self_attention.in_proj_\1"),
    (r"self_attention\.proj\.", r"self_attention.out_proj."),
]


def _vit_key(key: str) -> str:
    for pattern, repl in _VIT_RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def _vit_pair(full: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    models = torchvision_models()
    torch.manual_seed(1)
    if full:
        theirs = models.vit_b_16(weights=None)
    else:
        theirs = models.VisionTransformer(**VIT_SMALL)
    theirs.eval()
    with torch.no_grad():  # torchvision starts the head at zero, which would hide everything
        theirs.heads.head.weight.normal_(0.0, 0.05)
        theirs.heads.head.bias.normal_(0.0, 0.05)
        theirs.class_token.normal_()
    ours = _ours("vit_b_16", {} if full else VIT_SMALL)
    source = theirs.state_dict()
    ours.load_state_dict({k: source[_vit_key(k)] for k in ours.state_dict()}, strict=True)
    assert len(source) == len(ours.state_dict())  # every torchvision tensor was taken
    return ours, theirs


def test_vit_small_configuration_equals_torchvisions_vision_transformer() -> None:
    ours, theirs = _vit_pair(full=False)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _close(ours(images), theirs(images))


@pytest.mark.slow
def test_vit_b_16_equals_torchvisions() -> None:
    ours, theirs = _vit_pair(full=True)
    assert _count(ours) == _count(theirs) == 86_567_656
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _close(ours(images), theirs(images))


# --- BERT-base against Hugging Face ---------------------------------------------------------------


def _transformers():
    if importlib.util.find_spec("transformers") is None:
        pytest.skip(
            "transformers is not installed (the test extra installs it: pip install -e .[test])"
        )
    return importlib.import_module("transformers")


def _bert_weights(theirs: torch.nn.Module, ours: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Hugging Face's BertModel state_dict under dslc's names: query, key and value Linear layers
    concatenated (in that order) into the attention's one qkv projection."""
    hf = theirs.state_dict()
    table = {
        "word_embeddings.": "embeddings.word_embeddings.",
        "token_type_embeddings.": "embeddings.token_type_embeddings.",
        "position_embeddings.": "embeddings.position_embeddings.",
        "ln1.": "embeddings.LayerNorm.",
        "pooler.": "pooler.dense.",
    }
    layer = {
        "attn1.proj.": "attention.output.dense.",
        "ln1.": "attention.output.LayerNorm.",
        "fc1.": "intermediate.dense.",
        "fc2.": "output.dense.",
        "ln2.": "output.LayerNorm.",
    }
    out = {}
    for key in ours.state_dict():
        if m := re.match(r"layer\.(\d+)\.attn1\.qkv\.(weight|bias)$", key):
            at = f"encoder.layer.{m[1]}.attention.self"
            out[key] = torch.cat([hf[f"{at}.{p}.{m[2]}"] for p in ("query", "key", "value")])
            continue
        if m := re.match(r"layer\.(\d+)\.(.*)$", key):
            prefix, rest, names = f"encoder.layer.{m[1]}.", m[2], layer
        else:
            prefix, rest, names = "", key, table
        ours_part = next(p for p in names if rest.startswith(p))
        out[key] = hf[prefix + names[ours_part] + rest[len(ours_part) :]]
    return out


def _bert_pair(full: bool, pooler: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    transformers = _transformers()
    small = {} if full else BERT_SMALL
    config = transformers.BertConfig(
        vocab_size=small.get("vocab", 30522),
        max_position_embeddings=small.get("positions", 512),
        hidden_size=small.get("width", 768),
        num_hidden_layers=small.get("layers", 12),
        num_attention_heads=small.get("heads", 12),
        intermediate_size=small.get("intermediate", 3072),
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
    )
    torch.manual_seed(1)
    theirs = transformers.BertModel(config, add_pooling_layer=pooler).eval()
    ours = _ours("bert_base", {**small, "pooler": pooler})
    ours.load_state_dict(_bert_weights(theirs, ours), strict=True)
    # as many numbers as Hugging Face's parameters: each of them was taken once
    assert _count(ours) == _count(theirs)
    return ours, theirs


def _bert_inputs(batch: int, length: int, vocab: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, vocab, (batch, length), generator=gen)
    types = torch.randint(0, 2, (batch, length), generator=gen)
    lengths = torch.linspace(length, 1, batch).round().long()  # row 0 full, the rest padded
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return ids, types, mask


def _compare_bert(ours, theirs, batch: int, length: int, vocab: int, pooler: bool) -> None:
    ids, types, mask = _bert_inputs(batch, length, vocab)
    with torch.no_grad():
        hidden, pooled = ours(ids, types, mask)
        want = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask)
    _close(hidden, want.last_hidden_state)
    if pooler:
        _close(pooled, want.pooler_output)
    else:  # without the pooler, `pooled` is the class token's final state
        assert torch.equal(pooled, hidden[:, 0])


@pytest.mark.parametrize("pooler", [False, True], ids=["encoder", "pooler"])
@pytest.mark.parametrize("length", [1, 7, 64])
def test_bert_small_configuration_equals_hugging_faces_bert_model(pooler, length) -> None:
    ours, theirs = _bert_pair(full=False, pooler=pooler)
    _compare_bert(ours, theirs, batch=3, length=length, vocab=1000, pooler=pooler)


@pytest.mark.slow
@pytest.mark.parametrize(("pooler", "count"), [(False, 108_891_648), (True, 109_482_240)])
def test_bert_base_equals_hugging_faces(pooler, count) -> None:
    ours, theirs = _bert_pair(full=True, pooler=pooler)
    assert _count(ours) == count
    _compare_bert(ours, theirs, batch=3, length=64, vocab=30522, pooler=pooler)
