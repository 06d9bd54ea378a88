"""dslc train on image folders the tests draw (tests/images.py): training learns the shapes,
the class names reach labels.json, the ONNX metadata and `dslc run --top-k`; the image steps
agree with torchvision's functional transforms; loader workers give the same batches; every
bad folder is exit 1 naming the file; CSV class names become labels."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from images import CLASSES, folder
from PIL import Image
from test_train_data import one_thread  # noqa: F401

from dslc.api import load
from dslc.cli import main
from dslc.runtime.train import images
from dslc.runtime.train.contract import contract
from dslc.transforms import STEPS, Transform

SPEC = "specs/shapes_cnn.dl"
MEAN, STD = 0.5, 0.25  # the spec's normalize, every channel


def _train(tmp_path, *extra: str) -> int:
    return main(["train", SPEC, "--out", str(tmp_path / "run"), "--workers", "0", *extra])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return folder(root / "train", 60, seed=0, jpeg=True), folder(root / "val", 20, seed=1)


def test_a_folder_of_shapes_trains_and_keeps_its_class_names(shapes, tmp_path, capsys):
    """Measured: 0.88 validation accuracy after 8 epochs (seed 0; chance 0.33)."""
    train, val = shapes
    assert _train(tmp_path, "--data", str(train), "--val", str(val), "--export-onnx") == 0
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["val_accuracy"] for r in rows) >= 0.8
    assert json.loads((run / "labels.json").read_text()) == {"classes": list(CLASSES)}
    meta = {p.key: p.value for p in onnx.load(run / "model.onnx").metadata_props}
    assert json.loads(meta["dslc.labels"]) == list(CLASSES)
    capsys.readouterr()
    x = np.stack([_reference_pixels(val / k / "000.png") for k in CLASSES])
    np.save(tmp_path / "x.npy", (x / 255 - MEAN) / STD)
    assert main(["run", str(run / "model.onnx"), "--input", f"x={tmp_path / 'x.npy'}",
                 "--top-k", "3"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "logits: top 3 of 3 classes"
    for line in lines[2:]:
        names = [part.split()[0] for part in line.split(": ")[1].split(", ")]
        assert sorted(names) == sorted(CLASSES), line
        probs = [float(part.split()[1]) for part in line.split(": ")[1].split(", ")]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-3


def _reference_pixels(path) -> np.ndarray:
    """preprocess by hand: resize the shorter side to 28, the central 24x24, (3, H, W) 0..255."""
    image = Image.open(path).convert("RGB").resize((28, 28), Image.Resampling.BILINEAR)
    return np.asarray(image.crop((2, 2, 26, 26)), np.float32).transpose(2, 0, 1)


def test_baked_normalization_takes_raw_pixels(shapes, tmp_path):
    """--bake-normalize: the ONNX model on 0..255 pixels equals the module on normalized ones."""
    from dslc.runtime.run import run_model
    from dslc.runtime.train.checkpoint import load_weights

    train, val = shapes
    args = ["--data", str(train), "--val", str(val), "--epochs", "1"]
    assert _train(tmp_path, *args, "--export-onnx", "--bake-normalize") == 0
    run = tmp_path / "run"
    raw = np.stack([_reference_pixels(p) for p in sorted((val / "square").iterdir())[:7]])
    got, _ = run_model(str(run / "model.onnx"), {"x": raw})
    module = contract(load(SPEC)).create_model()
    load_weights(module, run / "best.safetensors")
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy((raw / 255 - MEAN) / STD).float())
    np.testing.assert_allclose(got["logits"], expected.numpy(), atol=1e-5)


def test_bake_normalize_needs_export(shapes, tmp_path, capsys):
    assert _train(tmp_path, "--data", str(shapes[0]), "--bake-normalize") == 1
    assert "--export-onnx" in capsys.readouterr().err


def _step(name: str, **attrs) -> Transform:
    step = STEPS[name]
    return Transform(step, {a.name: attrs.get(a.name, a.default) for a in step.attrs})


def test_steps_agree_with_torchvision(tmp_path):
    from reference import torchvision_models

    torchvision_models()  # skips without torchvision; imports it (with the stub it needs)
    import torchvision.transforms.v2.functional as tf

    image = folder(tmp_path, 1, seed=3, size=37)
    picture = Image.open(image / "circle" / "000.png").convert("RGB")
    rng = np.random.default_rng(0)
    cases = [
        (_step("resize", size=20), tf.resize(picture, [20])),
        (_step("resize", size=(17, 23)), tf.resize(picture, [17, 23])),
        (_step("center_crop", size=21), tf.center_crop(picture, [21])),
        (_step("hflip", p=1.0), tf.horizontal_flip(picture)),
    ]
    for t, expected in cases:
        got = t.step.apply(t.attrs, picture, rng)
        assert np.array_equal(np.asarray(got), np.asarray(expected)), t.text()
    crop = _step("random_resized_crop", size=16, scale=(0.3, 0.9))
    left, top, w, h = crop.step._box(crop.attrs, 37, 37, np.random.default_rng(5))  # type: ignore[attr-defined]
    got = crop.step.apply(crop.attrs, picture, np.random.default_rng(5))
    expected = tf.resized_crop(picture, top, left, h, w, [16, 16])
    assert 0.3 * 37 * 37 * 0.9 <= w * h <= 0.9 * 37 * 37 * 1.1
    assert np.array_equal(np.asarray(got), np.asarray(expected))


def test_color_jitter_is_torchvisions():
    """hue is torchvision's adjust_hue on the same Pillow image, for shifts across the allowed
    [-0.5, 0.5]; a jitter of all four is torchvision's adjust_* with the factors it draws, in
    the order it draws (a new order per image, as torchvision's ColorJitter)."""
    from reference import torchvision_models

    torchvision_models()
    import torchvision.transforms.v2.functional as tf

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (19, 23, 3), np.uint8))
    jitter = _step("color_jitter", brightness=0.3, contrast=0.4, saturation=0.5, hue=0.2)
    cj = jitter.step
    for shift in (-0.5, -0.31, -0.004, 0.0, 0.07, 0.26, 0.5):
        got = cj.adjust(picture, "hue", shift)  # type: ignore[attr-defined]
        assert np.array_equal(np.asarray(got), np.asarray(tf.adjust_hue(picture, shift))), shift
        assert shift == 0 or not np.array_equal(np.asarray(got), np.asarray(picture))
    functions = {
        "brightness": tf.adjust_brightness,
        "contrast": tf.adjust_contrast,
        "saturation": tf.adjust_saturation,
        "hue": tf.adjust_hue,
    }
    orders = set()
    for seed in range(8):
        drawn = cj.draw(jitter.attrs, np.random.default_rng(seed))  # type: ignore[attr-defined]
        orders.add(tuple(k for k, _ in drawn))
        expected = picture
        for key, factor in drawn:
            width = jitter.attrs[key]
            assert (-width if key == "hue" else 1 - width) <= factor <= (width + (key != "hue"))
            expected = functions[key](expected, factor)
        got = cj.apply(jitter.attrs, picture, np.random.default_rng(seed))
        assert np.array_equal(np.asarray(got), np.asarray(expected)), drawn
    assert all(sorted(o) == sorted(functions) for o in orders) and len(orders) > 3


def test_augmentation_is_the_same_with_workers(shapes):
    """Each example's randomness is seeded by (seed, epoch, index): two workers give the
    batches of the in-process loader, and another epoch other crops."""
    c = contract(load(SPEC))
    sets = [images.datasets(c, str(shapes[0]), None, 0.0, 0, w)[0] for w in (0, 2)]
    chunks = [torch.arange(i, i + 16) for i in (0, 16, 32)]
    first, second = (list(s.batches(chunks, 1)) for s in sets)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["label"], b["label"])
    other = next(iter(sets[0].batches(chunks[:1], 2)))
    assert not torch.equal(other["x"], first[0]["x"])


def _bad(tmp_path, make) -> str:
    root = folder(tmp_path / "data", 3, seed=0, size=24)
    make(root)
    return str(root)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda r: [shutil.rmtree(r / k) for k in CLASSES], "image folder {r} is empty"),
        (lambda r: (r / "circle" / "notes.txt").write_text("hi"), "{r}/circle/notes.txt is not"),
        (lambda r: (r / "square" / "bad.png").write_bytes(b"not a png"), "{r}/square/bad.png"),
        (lambda r: (r / "triangle" / "big.png").write_bytes(_sized(40)), "{r}/triangle/big.png"),
        (lambda r: [shutil.rmtree(r / "circle"), (r / "circle").mkdir()], "folder {r}/circle"),
        (lambda r: (r / "stray.png").write_bytes(_sized(24)), "{r}/stray.png: an image folder"),
        (lambda r: (r / "square" / "cut.png").write_bytes(_sized(24)[:-60]), "{r}/square/cut.png"),
    ],
    ids=["empty", "not-an-image", "corrupt", "mixed-sizes", "empty-class", "loose-file",
         "truncated"],
)  # fmt: skip
def test_bad_folders_name_the_file(tmp_path, capsys, make, expected):
    data = _bad(tmp_path, make)
    spec = tmp_path / "plain.dl"  # no resize: every image must be 24x24 already
    spec.write_text(_plain_spec())
    status = main(["train", str(spec), "--data", data, "--out", str(tmp_path / "run"),
                   "--workers", "0", "--val-split", "0.25", "--epochs", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1, err
    assert expected.format(r=data) in err and "Traceback" not in err


def _plain_spec() -> str:
    text = open(SPEC).read()
    start, end = text.index("    preprocess"), text.index("    loss =")
    return text[:start] + text[end:]


def _sized(size: int) -> bytes:
    import io

    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), np.uint8)).save(
        out, "PNG"
    )
    return out.getvalue()


def test_mixed_sizes_need_a_resize(tmp_path, capsys):
    root = folder(tmp_path / "a", 2, size=24)
    (root / "circle" / "big.png").write_bytes(_sized(30))
    spec = tmp_path / "plain.dl"
    spec.write_text(_plain_spec())
    assert main(["train", str(spec), "--data", str(root), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert f"{root}/circle/big.png: the image is 30x30" in err and "2 sizes" in err
    assert "resize" in err


def test_validation_classes_are_training_classes(shapes, tmp_path, capsys):
    val = folder(tmp_path / "val", 2, seed=4)
    (val / "circle").rename(val / "hexagon")
    assert _train(tmp_path, "--data", str(shapes[0]), "--val", str(val)) == 1
    assert f"{val}/hexagon: class 'hexagon' is not among the training classes" in (
        capsys.readouterr().err
    )


IRIS = """
model Iris {
    input x: f32[N, 2]
    output logits = x -> linear(3)
}

train {
    target species: i64[N]
    loss = cross_entropy(logits, species)
    optimizer = adam(lr=0.05)
    batch_size = 16
    epochs = 20
}
"""


def _iris(path, rows) -> str:
    path.write_text("a,b,species\n" + "".join(f"{a},{b},{s}\n" for a, b, s in rows))
    return str(path)


def test_csv_class_names_become_labels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    names = ["virginica", "setosa", "versicolor"]
    centres = {"setosa": (0, 3), "versicolor": (3, 0), "virginica": (3, 3)}
    rows = [(*(np.array(centres[s]) + rng.normal(0, 0.3, 2)), s) for s in names * 30]
    spec = tmp_path / "iris.dl"
    spec.write_text(IRIS)
    data, val = _iris(tmp_path / "train.csv", rows[:60]), _iris(tmp_path / "val.csv", rows[60:])
    out = tmp_path / "run"
    args = ["train", str(spec), "--data", data, "--val", val, "--out", str(out)]
    assert main(args) == 0
    assert json.loads((out / "labels.json").read_text())["classes"] == sorted(names)
    rows_ = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows_[-1]["val_accuracy"] >= 0.9
    _iris(tmp_path / "val.csv", [(0, 0, "setosa"), (1, 1, "daisy")])
    assert main([*args[:-1], str(tmp_path / "run2")]) == 1
    err = capsys.readouterr().err
    assert f"{val}:3: column 'species' holds class 'daisy'" in err


def test_csv_field_that_is_no_number_names_row_and_column(tmp_path, capsys):
    spec = tmp_path / "iris.dl"
    spec.write_text(IRIS)
    data = _iris(tmp_path / "train.csv", [(0, 1, "a"), (2, "x7", "b"), (1, 1, "a")])
    assert main(["train", str(spec), "--data", data, "--out", str(tmp_path / "r")]) == 1
    assert f"{data}:3: column 'b' holds 'x7', not a number" in capsys.readouterr().err


def test_resuming_sees_the_augmentation_of_the_uninterrupted_run(shapes, tmp_path):
    """Two epochs in one go, and one epoch then --resume to two (with two loader workers the
    second time): the same weights, bit for bit."""
    from safetensors.numpy import load_file

    data = ["--data", str(shapes[1]), "--val-split", "0.2"]
    once, twice = str(tmp_path / "once"), str(tmp_path / "twice")
    assert main(["train", SPEC, *data, "--out", once, "--epochs", "2", "--workers", "0"]) == 0
    assert main(["train", SPEC, *data, "--out", twice, "--epochs", "1", "--workers", "0"]) == 0
    resumed = ["--out", twice, "--epochs", "2", "--workers", "2", "--resume"]
    assert main(["train", SPEC, *data, *resumed]) == 0
    a, b = load_file(f"{once}/last.safetensors"), load_file(f"{twice}/last.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
