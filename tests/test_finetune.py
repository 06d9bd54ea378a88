"""Fine-tuning: `dslc train --init-from` (strict, with --allow-missing), frozen layers and batch
norms, unfreezing at an epoch, parameter groups in create_optimizer, and `dslc weights map`.
References: torchvision's resnet18 state_dict (random weights), torch's own state_dicts, and
parameter groups recomputed here with fnmatch."""

from __future__ import annotations

import fnmatch
import re

import numpy as np
import torch
from conftest import ROOT
from reference import torchvision_models
from safetensors.torch import load_file, save_file
from test_train_data import one_thread  # noqa: F401  (autouse: one torch thread)

import dslc
from dslc.cli import main

SPEC = ROOT / "specs" / "digits_resnet.dl"
FREEZE = '    freeze = ["conv1", "bn1", "layer*"]\n'


def with_settings(tmp_path, lines: str, spec=SPEC, name="ft.dl") -> str:
    """The spec with `lines` added to its train section."""
    text = spec.read_text()
    at = text.rindex("}")
    (tmp_path / name).write_text(text[:at] + lines + text[at:])
    return str(tmp_path / name)


def digits_like(tmp_path, n: int = 24, classes: int = 4) -> str:
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, label=rng.integers(0, classes, n))
    return str(tmp_path / "d.npz")


def module(classes: int = 4, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return dslc.load(SPEC, {"classes": classes}).torch_module()


def train(spec: str, data: str, out, *extra: str) -> int:
    args = ["train", spec, "--data", data, "--val", data, "--out", str(out)]
    return main([*args, "--batch-size", "8", *extra])


def test_a_torchvision_resnet18_state_dict_starts_a_run(tmp_path, capsys):
    """torchvision's keys and the generated module's are the same: strict loading of a
    torch.save file; the frozen backbone ends the run as loaded, batch norm statistics too."""
    theirs = torchvision_models().resnet18().state_dict()
    torch.save(theirs, tmp_path / "resnet18.pth")
    spec = with_settings(
        tmp_path, '    freeze = ["conv1", "bn1", "layer*"]\n', ROOT / "specs/resnet18.dl"
    )
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", image=rng.random((4, 3, 32, 32), np.float32), label=np.arange(4))
    args = ["--param", "size=32", "--data", str(tmp_path / "img.npz"), "--val-split", "0"]
    args += ["--epochs", "1", "--batch-size", "2", "--init-from", str(tmp_path / "resnet18.pth")]
    assert main(["train", spec, *args, "--out", str(tmp_path / "run")]) == 0
    assert "started from" in capsys.readouterr().err
    after = load_file(tmp_path / "run" / "last.safetensors")
    for key, tensor in theirs.items():
        if key.startswith("fc."):
            assert not torch.equal(after[key], tensor), key  # the head trained
        else:
            assert torch.equal(after[key], tensor), key  # running_mean, num_batches_tracked too


def test_mismatches_are_a_table_and_exit_1(tmp_path, capsys):
    sd = module(classes=6).state_dict()
    del sd["layer1.bn2.bias"]
    sd["extra.weight"] = torch.zeros(3)
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
    data = digits_like(tmp_path)
    w = str(tmp_path / "w.safetensors")
    assert train(str(SPEC), data, tmp_path / "r", "--param", "classes=4", "--init-from", w) == 1
    err = capsys.readouterr().err
    assert "1 missing, 1 unexpected, 2 of another shape" in err, err
    assert re.search(r"fc\.weight +\[6, 64\] +\[4, 64\]", err), err
    assert re.search(r"layer1\.bn2\.bias +missing +\[32\]", err), err
    assert re.search(r"extra\.weight +\[3\] +unexpected", err), err
    assert w in err


def test_allow_missing_keeps_the_fresh_head(tmp_path, capsys):
    pre = module(classes=6, seed=1).state_dict()
    save_file(pre, tmp_path / "w.safetensors")
    spec = with_settings(tmp_path, FREEZE)
    args = ["--param", "classes=4", "--init-from", str(tmp_path / "w.safetensors"), "--epochs", "1"]
    data = digits_like(tmp_path)
    assert train(spec, data, tmp_path / "r", *args, "--allow-missing", "fc.*") == 0
    assert "2 kept their fresh init" in capsys.readouterr().err
    after = load_file(tmp_path / "r" / "last.safetensors")
    for key in pre:
        if not key.startswith("fc."):
            assert torch.equal(after[key], pre[key]), key
    assert train(spec, data, tmp_path / "r2", *args, "--allow-missing", "head.*") == 1
    assert (
        "--allow-missing 'head.*' matches no key of model DigitsResNet" in capsys.readouterr().err
    )


def test_unfreezing_at_an_epoch(tmp_path):
    """Frozen in epoch 1 (weights and batch norm statistics as loaded); from epoch 2 on, both
    train: the run is resumed for its second epoch, so the first one's weights are seen."""
    pre = module(seed=1).state_dict()
    save_file(pre, tmp_path / "w.safetensors")
    spec = with_settings(tmp_path, FREEZE + "    unfreeze_at = 2\n")
    data = digits_like(tmp_path)
    w = ["--param", "classes=4", "--init-from", str(tmp_path / "w.safetensors")]
    assert train(spec, data, tmp_path / "r", *w, "--epochs", "1") == 0
    first = load_file(tmp_path / "r" / "last.safetensors")
    assert torch.equal(first["layer1.bn1.running_mean"], pre["layer1.bn1.running_mean"])
    assert torch.equal(first["layer2.conv1.weight"], pre["layer2.conv1.weight"])
    assert (
        train(spec, data, tmp_path / "r", "--param", "classes=4", "--epochs", "2", "--resume") == 0
    )
    second = load_file(tmp_path / "r" / "last.safetensors")
    assert not torch.equal(second["layer1.bn1.running_mean"], pre["layer1.bn1.running_mean"])
    assert not torch.equal(second["layer2.conv1.weight"], pre["layer2.conv1.weight"])


def test_parameter_groups_as_fnmatch_says(tmp_path):
    spec = with_settings(
        tmp_path,
        '    param_groups = [group("layer*", "conv1", lr=1e-4), group("fc", weight_decay=0.0)]\n'
        "    decay_norms_and_biases = false\n",
    )
    ns = dslc.load(spec).torch_namespace()
    model = ns["create_model"]()
    opt = ns["create_optimizer"](model)
    seen = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert len(seen) == len(list(model.parameters()))
    for name, p in model.named_parameters():
        g = seen[id(p)]
        backbone = any(fnmatch.fnmatchcase(name, x) for x in ("layer*", "conv1.*"))
        assert g["lr"] == (1e-4 if backbone else 3e-3), name
        assert g["weight_decay"] == 0.0, name  # adam's default is 0 as well: see the next test


def test_no_decay_on_biases_and_norms():
    spec_text = SPEC.read_text().replace("adam(lr=3e-3)", "sgd(lr=0.1, weight_decay=1e-4)")
    for decay in ("true", "false"):
        text = spec_text.replace(
            '"val_accuracy"\n', f'"val_accuracy"\n    decay_norms_and_biases = {decay}\n'
        )
        ns = dslc.compile_source(text, "x.dl").torch_namespace()
        model = ns["create_model"]()
        groups = ns["create_optimizer"](model).param_groups
        for name, p in model.named_parameters():
            (g,) = [g for g in groups if any(q is p for q in g["params"])]
            want = 0.0 if decay == "false" and p.ndim <= 1 else 1e-4
            assert g["weight_decay"] == want, (decay, name)


def test_weights_map_renames_another_layout(tmp_path, capsys):
    ours = module(seed=3).state_dict()
    modules = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in ours))
    layout = {  # the same tensors and leaf names, numbered as in an nn.Sequential
        f"features.{modules.index(k.rsplit('.', 1)[0])}.{k.rsplit('.', 1)[1]}": v
        for k, v in ours.items()
    }
    torch.save(layout, tmp_path / "other.pt")
    out = tmp_path / "mapped.safetensors"
    assert (
        main(
            [
                "weights",
                "map",
                str(SPEC),
                "--param",
                "classes=4",
                str(tmp_path / "other.pt"),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "features.0.weight" in printed and "-> conv1.weight [32, 1, 3, 3]" in printed
    mapped = load_file(out)
    assert mapped.keys() == ours.keys()
    assert all(torch.equal(mapped[k], ours[k]) for k in ours)


def test_weights_map_refuses_an_ambiguity(tmp_path, capsys):
    sd = dict(module().state_dict())
    sd["spare.weight"] = torch.zeros(32)  # one more [32] 'weight' than the model has
    torch.save(sd, tmp_path / "w.pt")
    args = ["weights", "map", str(SPEC), "--param", "classes=4", str(tmp_path / "w.pt")]
    assert main([*args, "-o", str(tmp_path / "m.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "ambiguous" in err and "spare.weight" in err and "'weight' of shape [32]" in err
    assert not (tmp_path / "m.safetensors").exists()


def test_init_from_in_the_spec_is_relative_to_its_folder(tmp_path, monkeypatch, capsys):
    pre = module(seed=1).state_dict()
    (tmp_path / "specs").mkdir()
    save_file(pre, tmp_path / "specs" / "w.safetensors")
    lines = '    init_from = "w.safetensors"\n' + FREEZE
    spec = with_settings(tmp_path / "specs", lines)
    data = digits_like(tmp_path)
    monkeypatch.chdir(tmp_path)  # not the spec's folder
    assert train(spec, data, tmp_path / "r", "--param", "classes=4", "--epochs", "1") == 0
    assert f"started from {tmp_path / 'specs' / 'w.safetensors'}" in capsys.readouterr().err
    after = load_file(tmp_path / "r" / "last.safetensors")
    assert torch.equal(after["layer2.conv2.weight"], pre["layer2.conv2.weight"])
    missing = ["--init-from", str(tmp_path / "nope.pt")]
    assert train(spec, data, tmp_path / "r2", "--param", "classes=4", *missing) == 1
    assert f"weights file {tmp_path / 'nope.pt'} does not exist" in capsys.readouterr().err


def test_the_fine_tuning_spec_has_the_pretrained_specs_keys() -> None:
    """specs/digits_finetune.dl derives its model from specs/digits_resnet.dl: a pretrained
    checkpoint fits it key for key and shape for shape, but for the head (fc) it replaces."""
    tuned = dslc.load(ROOT / "specs/digits_finetune.dl").torch_module()
    pre = module(classes=6).state_dict()
    shapes = {k: v.shape != pre[k].shape for k, v in tuned.state_dict().items()}
    assert shapes.keys() == pre.keys() and {k for k, d in shapes.items() if d} == {
        "fc.weight",
        "fc.bias",
    }
    body = {k: v for k, v in pre.items() if not k.startswith("fc.")}
    assert tuned.load_state_dict(body, strict=False).missing_keys == ["fc.weight", "fc.bias"]
