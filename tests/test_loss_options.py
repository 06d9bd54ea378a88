"""Loss options: ignore_index and class weights for cross_entropy and nll, pos_weight for
bce_with_logits. The generated loss equals PyTorch's with the same options (computed here by
torch.nn.functional itself); ignored targets are allowed in training data and left out of the
accuracy; weights of the wrong length are errors at the spec's line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

import dslc
from dslc.runtime.train.metrics import accuracy

CLASSIFIER = """
model M {{ input x: f32[N, 4]  output logits = x -> linear(3) }}
train {{
    target y: i64[N]
    loss = {loss}
    optimizer = sgd(lr=0.1)
}}
"""


def _loss(spec: dslc.Spec, *tensors):
    return spec.torch_namespace()["create_loss"]()(*tensors)


def test_cross_entropy_ignore_index_and_weight_are_pytorchs() -> None:
    spec = dslc.compile_source(
        CLASSIFIER.format(loss="cross_entropy(logits, y, ignore_index=0, weight=[1.0, 2.0, 0.5])")
    )
    logits = torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 0, 2, 1])
    want = F.cross_entropy(logits, y, ignore_index=0, weight=torch.tensor([1.0, 2.0, 0.5]))
    assert torch.allclose(_loss(spec, logits, y), want)
    assert spec.torch_namespace()["IGNORE_INDEX"] == {"y": 0}


def test_nll_weight() -> None:
    spec = dslc.compile_source(CLASSIFIER.format(loss="nll(logits, y, weight=[0.2, 0.3, 0.5])"))
    logp = torch.randn(5, 3).log_softmax(1)
    y = torch.tensor([0, 1, 2, 2, 1])
    assert torch.allclose(
        _loss(spec, logp, y), F.nll_loss(logp, y, weight=torch.tensor([0.2, 0.3, 0.5]))
    )


def test_bce_with_logits_pos_weight() -> None:
    spec = dslc.compile_source(
        "model M { input x: f32[N, 4]  output z = x -> linear(2) }\n"
        "train { target t: f32[N, 2]  loss = bce_with_logits(z, t, pos_weight=[3.0, 0.5])\n"
        "  optimizer = sgd(lr=0.1) }"
    )
    z, t = torch.randn(4, 2), torch.randint(0, 2, (4, 2)).float()
    want = F.binary_cross_entropy_with_logits(z, t, pos_weight=torch.tensor([3.0, 0.5]))
    assert torch.allclose(_loss(spec, z, t), want)


def test_accuracy_leaves_ignored_targets_out() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    hits, n = accuracy(logits, torch.tensor([0, -1, 1]), ignore=-1)
    assert (hits, n) == (1.0, 2)


def test_training_data_may_hold_the_ignore_index(tmp_path) -> None:
    from dslc.cli import main

    spec = tmp_path / "m.dl"
    spec.write_text(CLASSIFIER.format(loss="cross_entropy(logits, y, ignore_index=7)"))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    y[::5] = 7  # padding the classifier never predicts
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((40, 4)).astype(np.float32), y=y)
    code = main(
        [
            "train",
            str(spec),
            "--data",
            str(tmp_path / "d.npz"),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
        ]
    )
    assert code == 0


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ("cross_entropy(logits, y, weight=[1.0, 2.0])", "weight has 2 values"),
        ("cross_entropy(logits, y, weight=[1.0, -2.0, 1.0])", "must be at least 0"),
    ],
)
def test_weight_errors(loss: str, message: str) -> None:
    with pytest.raises(dslc.CompileError) as err:
        dslc.compile_source(CLASSIFIER.format(loss=loss))
    assert message in err.value.diagnostics.items[0].message
