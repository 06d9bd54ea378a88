"""Derived models (dslc/frontend/derive.py): `model Small = Net(classes=3)` is the imported
model Net with new defaults, under its own name: the same layers and state_dict keys as Net
compiled with those values, so a checkpoint of the one loads into the other; --param still
overrides; the imported file's train section stays its own. Errors point at the derived line
(the goldens tests/errors/derived_model_*.dl hold the rendered ones)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_imports import errors, write

import dslc

BASE = """\
block Stage(width: int) {
    input x
    output y = x -> linear(width) -> relu
}

model Net(classes: int = 10, width: int = 8) {
    input x: f32[N, 4]
    output logits = x -> Stage(width) as body -> linear(classes) as head
}

train {
    target y: i64[N]
    loss = cross_entropy(logits, y)
    optimizer = sgd(lr=0.1)
    epochs = 7
}
"""


def keys(spec: dslc.Spec) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in spec.torch_module().state_dict().items()}


def derived(tmp_path: Path, line: str, rest: str = "") -> Path:
    write(tmp_path, {"base.dl": BASE, "small.dl": f'import "base.dl"\n\n{line}\n{rest}'})
    return tmp_path / "small.dl"


def model_class(spec: dslc.Spec) -> str:
    """The generated model class, its name written `Model`."""
    source = spec.torch_source()
    start = source.index(f"class {spec.name}(nn.Module):")
    return source[start : source.index("\n\n\n", start)].replace(spec.name, "Model", 1)


def test_a_derived_model_is_the_imported_one_with_new_defaults(tmp_path: Path) -> None:
    """Keys, shapes and module code are Net's with classes=3 but for the class name; Net's
    weights load strictly; --param overrides a given default and a default not given."""
    path = derived(tmp_path, "model Small = Net(classes=3)")
    small, net = dslc.load(path), dslc.load(tmp_path / "base.dl", {"classes": 3})
    assert small.name == "Small" and keys(small) == keys(net)
    assert keys(small)["head.weight"] == (3, 8)
    assert model_class(small) == model_class(net)
    small.torch_module().load_state_dict(net.torch_module().state_dict(), strict=True)
    assert keys(dslc.load(path, {"classes": 5}))["head.weight"] == (5, 8)
    assert keys(dslc.load(path, {"width": 6}))["head.weight"] == (3, 6)


def test_the_comments_above_the_derived_line_are_the_docstring(tmp_path: Path) -> None:
    spec = dslc.load(derived(tmp_path, "# Net, for three classes.\nmodel Small = Net(classes=3)"))
    assert model_class(spec).startswith(
        'class Model(nn.Module):\n    """Net, for three classes."""'
    )


def test_arguments_by_position_as_in_a_call(tmp_path: Path) -> None:
    spec = dslc.load(derived(tmp_path, "model Small = Net(3, 5)"))
    assert keys(spec)["head.weight"] == (3, 5)
    assert keys(dslc.load(derived(tmp_path, "model Same = Net")))["head.weight"] == (10, 8)


def test_the_imported_train_section_stays_its_own(tmp_path: Path) -> None:
    assert dslc.load(derived(tmp_path, "model Small = Net(classes=3)")).graph.training is None
    own = "train {\n    target y: i64[N]\n    loss = cross_entropy(logits, y)\n"
    own += "    optimizer = adam(lr=1e-3)\n}\n"
    spec = dslc.load(derived(tmp_path, "model Small = Net(classes=3)", own))
    training = spec.graph.training
    assert training is not None and training.optimizer is not None
    assert training.optimizer[0].name == "adam"
    assert training.settings["epochs"] != 7


def test_a_model_derived_from_a_derived_model(tmp_path: Path) -> None:
    derived(tmp_path, "model Small = Net(classes=3)")
    write(tmp_path, {"tiny.dl": 'import "small.dl"\nmodel Tiny = Small(width=2)\n'})
    assert keys(dslc.load(tmp_path / "tiny.dl"))["head.weight"] == (3, 2)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "model Small = Net(classes=2.5)",
            "small.dl:3:19: error: model Small: parameter 'classes' is int, got the number 2.5",
        ),
        ("model Small = Net(1, 2, 3)", "small.dl:3:25: error: model Net takes 2 parameter(s)"),
        (
            "model Small = Net(3, classes=4)",
            "small.dl:3:22: error: model Net: parameter 'classes' is given twice",
        ),
        ("model Net = Net(classes=3)", "error: model 'Net' is defined in two files"),
    ],
    ids=["type", "too_many", "twice", "same_name"],
)
def test_a_mistake_is_located_in_the_deriving_file(tmp_path: Path, line, expected) -> None:
    rendered = "\n".join(errors(derived(tmp_path, line)))
    assert expected in rendered, rendered


def test_without_an_import_there_is_no_model_to_derive_from(tmp_path: Path) -> None:
    write(tmp_path, {"alone.dl": "model Small = Net(classes=3)\n"})
    rendered = "\n".join(errors(tmp_path / "alone.dl"))
    assert "alone.dl:1:15: error: no imported file defines a model Net" in rendered
    assert 'import "file.dl"' in rendered


def test_a_derived_model_and_a_model_of_its_own_are_two(tmp_path: Path) -> None:
    own = "model Other {\n    input x: f32[N, 4]\n    output y = x -> relu\n}\n"
    rendered = "\n".join(errors(derived(tmp_path, "model Small = Net(classes=3)", own)))
    assert "error: a spec holds exactly one model" in rendered
