"""Detection data for dslc train and dslc eval: per-object targets (rows (image, x1, y1, x2, y2)
and labels) read from .npz and COCO-style JSON, checked, split, batched (micro-batches and
shards included) with column 0 renumbered to the image's place in the batch; boxes moved by
resize and hflip; mAP by pycocotools against values computed by hand; the detections PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from detection_data import CLASSES, write_coco, write_npz
from PIL import Image

from dslc.api import compile_source
from dslc.cli import main
from dslc.runtime.train import annotated, coco, data, objects
from dslc.runtime.train.contract import contract
from dslc.runtime.train.distributed import World
from dslc.runtime.train.mean_ap import mean_average_precision

SPEC = """
model TinyDetector(classes: int = 4) {
    input image: f32[N, 3, 64, 64]
    p = image -> conv2d(8, 3, padding=1) -> relu
    rois = image -> rpn(p, sizes=[16], aspect_ratios=[1.0], pre_nms_top_n=50, post_nms_top_n=20)
    logits = rois -> linear(classes)
    deltas = rois -> linear(4 * classes)
    found, scores, kinds, images = detections(logits, deltas, rois, image, detections=10)
    output found
    output scores
    output kinds
    output images
    output recon = image -> conv2d(3, 1)
}
train {
    target boxes: f32[M, 5]
    target labels: i64[M]
    loss = mse(recon, image)
    optimizer = sgd(lr=0.01)
    batch_size = 4
    epochs = 1
    AUGMENT
}
"""


def spec_file(tmp_path, augment=""):
    path = tmp_path / "det.dl"
    path.write_text(SPEC.replace("AUGMENT", augment), encoding="utf-8")
    return path


def the_contract(augment=""):
    return contract(compile_source(SPEC.replace("AUGMENT", augment), "det.dl"))


def file_objects(arrays, i):
    """The (x1, y1, x2, y2) and labels of image i of a file, by a plain loop."""
    rows = [
        (r[1:].tolist(), int(k))
        for r, k in zip(arrays["boxes"], arrays["labels"], strict=True)
        if r[0] == i
    ]
    return [r for r, _ in rows], [k for _, k in rows]


def assert_batch_holds(batch, file, images):
    """Each batch position p holds image images[p] of the file and exactly its objects (in
    any order)."""
    for p, i in enumerate(images):
        assert np.array_equal(batch["image"][p].numpy(), file["image"][i])
        mine = batch["boxes"][:, 0] == p
        got = zip(batch["boxes"][mine, 1:].tolist(), batch["labels"][mine].tolist(), strict=True)
        assert sorted(got) == sorted(zip(*file_objects(file, i), strict=True))
    assert set(batch["boxes"][:, 0].tolist()) <= set(range(len(images)))


def test_contract_finds_the_per_object_targets_and_the_detector():
    c = the_contract()
    lay = objects.layout(c)
    assert lay == objects.Layout(("boxes", "labels"), "boxes", ("labels",), (64, 64), 4)
    assert c.detections == {
        "boxes": "found",
        "scores": "scores",
        "labels": "kinds",
        "images": "images",
    }


def test_rows_of_images_include_images_without_objects():
    starts = np.array([0, 2, 2, 5])  # image 0: rows 0-1, image 1: none, image 2: rows 2-4
    rows, position = objects.rows(starts, [2, 1, 0])
    assert rows.tolist() == [2, 3, 4, 0, 1]
    assert position.tolist() == [0, 0, 0, 2, 2]


def test_batches_carry_their_images_objects_renumbered(tmp_path):
    path = write_npz(tmp_path / "d.npz", 12, seed=3)
    file = dict(np.load(path))
    c = the_contract()
    lay = objects.layout(c)
    arrays = data.load_for(c, str(path))
    shuffled = {
        k: v[::-1].copy() if k != "image" else v for k, v in arrays.items()
    }  # any row order
    ds = data.to_dataset(shuffled, c.arrays, str(path), lay)
    order = [7, 0, 11, 3]
    assert_batch_holds(ds.take(torch.tensor(order)), file, order)
    assert_batch_holds(ds.take(slice(2, 5)), file, [2, 3, 4])
    shard = World(rank=1, size=2).shard(torch.tensor(order))  # data-parallel: rank 1's part
    assert_batch_holds(ds.take(shard), file, [0, 3])


def test_split_keeps_each_images_objects(tmp_path):
    path = write_npz(tmp_path / "d.npz", 20, seed=4)
    file = dict(np.load(path))
    c = the_contract()
    lay = objects.layout(c)
    train, val = data.split(data.load_for(c, str(path)), 0.25, 0, str(path), lay)
    assert len(train["image"]) == 15 and len(val["image"]) == 5
    for part in (train, val):
        for p, image in enumerate(part["image"]):
            (i,) = [i for i in range(20) if np.array_equal(file["image"][i], image)]
            mine = part["boxes"][:, 0] == p
            assert part["boxes"][mine, 1:].tolist() == file_objects(file, i)[0]
    assert len(train["boxes"]) + len(val["boxes"]) == len(file["boxes"])


def test_training_micro_batches_hold_their_objects(tmp_path, monkeypatch):
    """With --accumulate 2, every micro-batch the loop differentiates holds its images' objects."""
    from dslc.runtime.train import loop, run

    path = write_npz(tmp_path / "d.npz", 10, seed=5)
    file = dict(np.load(path))
    seen = []
    backward = loop.Trainer._backward

    def record(self, batch, examples, share):
        seen.append(batch)
        return backward(self, batch, examples, share)

    monkeypatch.setattr(loop.Trainer, "_backward", record)
    opts = run.Options(str(spec_file(tmp_path)), str(path), tmp_path / "run", val_split=0)
    opts.accumulate = 2
    assert run.train(opts) == 0
    assert sum(len(b["image"]) for b in seen) == 10
    for batch in seen:
        images = [
            next(i for i in range(10) if np.array_equal(file["image"][i], x))
            for x in batch["image"]
        ]
        assert_batch_holds(batch, file, images)
    png = Image.open(tmp_path / "run" / "detections.png")
    assert png.width > 600  # the first four training images, side by side


def test_coco_folder_reads_images_and_boxes_scaled_to_the_model(tmp_path):
    """96x96 images for a 64x64 model: pixels as Pillow resizes them, boxes times 2/3."""
    folder = write_coco(tmp_path / "coco", 6, size=96, seed=1)
    doc = json.loads((folder / "annotations.json").read_text())
    c = the_contract()
    train, val, classes = annotated.datasets(c, str(folder), None, 0.0, 0, workers=0)
    assert val is None and classes == ["__background__", *CLASSES]
    batch = train.take([4, 1])
    for p, i in enumerate([4, 1]):
        entry = doc["images"][i]
        picture = Image.open(folder / "images" / entry["file_name"]).convert("RGB")
        want = np.asarray(picture.resize((64, 64), Image.Resampling.BILINEAR), np.float32) / 255
        assert np.array_equal(batch["image"][p].numpy(), want.transpose(2, 0, 1))
        anns = [a for a in doc["annotations"] if a["image_id"] == entry["id"]]
        expect = [
            [x * 2 / 3, y * 2 / 3, (x + w) * 2 / 3, (y + h) * 2 / 3]
            for x, y, w, h in (a["bbox"] for a in anns)
        ]
        mine = batch["boxes"][:, 0] == p
        assert np.allclose(batch["boxes"][mine, 1:].numpy(), expect, atol=1e-5)
        assert batch["labels"][mine].tolist() == [a["category_id"] for a in anns]


def test_coco_category_ids_become_labels_in_list_order(tmp_path):
    folder = write_coco(tmp_path / "coco", 4)
    path = folder / "annotations.json"
    doc = json.loads(path.read_text())
    remap = {1: 90, 2: 7, 3: 40}  # sparse ids, as COCO's own
    doc["categories"] = [{"id": remap[c["id"]], "name": c["name"]} for c in doc["categories"]]
    for a in doc["annotations"]:
        a["category_id"] = remap[a["category_id"]]
    doc["annotations"][0]["iscrowd"] = 1  # left out
    path.write_text(json.dumps(doc))
    scene = coco.read(str(path))
    first = doc["annotations"][1]
    i = first["image_id"] - 1
    expected = [
        {90: 1, 7: 2, 40: 3}[a["category_id"]]
        for a in doc["annotations"][1:]
        if a["image_id"] == first["image_id"]
    ]
    assert scene.objects is not None and scene.objects[i].tolist() == expected
    assert sum(len(o) for o in scene.objects) == len(doc["annotations"]) - 1


def test_hflip_mirrors_the_boxes_with_the_image(tmp_path):
    folder = write_coco(tmp_path / "coco", 3, seed=2)
    plain = annotated.datasets(the_contract(), str(folder), None, 0.0, 0, 0)[0].take([0, 1])
    c = the_contract("augment = [hflip(p=1.0)]")
    flipped = annotated.datasets(c, str(folder), None, 0.0, 0, 0)[0].take([0, 1])
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    x1, y1, x2, y2 = plain["boxes"][:, 1:].unbind(1)
    mirrored = torch.stack([plain["boxes"][:, 0], 64 - x2, y1, 64 - x1, y2], 1)
    assert torch.equal(flipped["boxes"], mirrored)


def train_error(tmp_path, capsys, data_path, spec=None):
    """dslc train's exit status 1 and its message (never a traceback) on bad data."""
    spec = spec or spec_file(tmp_path)
    code = main(["train", str(spec), "--data", str(data_path), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    return err


def bad_npz(tmp_path, change):
    path = write_npz(tmp_path / "d.npz", 6, seed=0)
    arrays = dict(np.load(path))
    change(arrays)
    np.savez(path, **arrays)
    return path


NPZ_ERRORS = {
    "outside": (lambda a: a["boxes"].__setitem__((2, 3), 70.0), "outside the image, 64x64"),
    "no_area": (
        lambda a: a["boxes"].__setitem__((1, 3), a["boxes"][1, 1]),
        "has a box with no area",
    ),
    "label": (
        lambda a: a["labels"].__setitem__(3, 4),
        "has class 4, but model TinyDetector's classes are 1 to 3",
    ),
    "background": (lambda a: a["labels"].__setitem__(0, 0), "has class 0"),
    "image": (
        lambda a: a["boxes"].__setitem__((0, 0), 6.0),
        "belongs to image 6, but the file has 6 images",
    ),
}


def test_a_box_within_a_pixel_of_the_edge_is_clipped(tmp_path):
    path = bad_npz(tmp_path, lambda a: a["boxes"].__setitem__((0, 3), 64.5))
    c = the_contract()
    arrays = data.load_for(c, str(path))
    assert arrays["boxes"][0, 3] == 64.0


def test_a_file_without_objects_is_an_error(tmp_path, capsys):
    path = tmp_path / "d.npz"
    np.savez(
        path,
        image=np.zeros((3, 3, 64, 64), np.float32),
        boxes=np.zeros((0, 5), np.float32),
        labels=np.zeros(0, np.int64),
    )
    assert f"{path}: no objects at all" in train_error(tmp_path, capsys, path)


def coco_case(tmp_path, change):
    folder = write_coco(tmp_path / "coco", 4)
    path = folder / "annotations.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path


COCO_ERRORS = {
    "key": (lambda d: d["annotations"][2].pop("bbox"), "annotations[2] has no 'bbox'"),
    "list": (lambda d: d.pop("categories"), "no 'categories' list"),
    "image": (
        lambda d: d["images"][1].__setitem__("file_name", "gone.png"),
        "image 2 is gone.png, which is neither in",
    ),
    "unknown_image": (
        lambda d: d["annotations"][0].__setitem__("image_id", 99),
        "annotation 1 names image 99",
    ),
    "category": (
        lambda d: d["annotations"][0].__setitem__("category_id", 5),
        "annotation 1 names category 5",
    ),
    "outside": (
        lambda d: d["annotations"][0].__setitem__("bbox", [50, 50, 20, 5]),
        "annotation 1 (image 1): the box [50, 50, 20, 5] lies outside the image, 64x64",
    ),
    "no_area": (
        lambda d: d["annotations"][0].__setitem__("bbox", [5, 5, 0, 4]),
        "annotation 1 (image 1): the box [5, 5, 0, 4] has no area",
    ),
    "empty": (lambda d: d.__setitem__("annotations", []), "no objects at all"),
    "classes": (
        lambda d: d["categories"].append({"id": 4, "name": "star"}),
        "4 categories (square, circle, triangle, star), but model TinyDetector's detector has "
        "3 classes",
    ),
}


BAD_DATA = [("npz", k) for k in sorted(NPZ_ERRORS)] + [("coco", k) for k in sorted(COCO_ERRORS)]


@pytest.mark.parametrize(("kind", "case"), BAD_DATA)
def test_bad_objects_are_errors_naming_the_file_and_the_object(tmp_path, capsys, kind, case):
    """.npz: `PATH: object I (image J)`; COCO: `PATH: annotation A (image J)` or the entry."""
    table, make = (NPZ_ERRORS, bad_npz) if kind == "npz" else (COCO_ERRORS, coco_case)
    change, message = table[case]
    path = make(tmp_path, change)
    err = train_error(tmp_path, capsys, path)
    assert message in err and (f"{path}: object" in err if kind == "npz" else str(path) in err), err


def test_crops_are_refused_for_per_object_targets(tmp_path, capsys):
    folder = write_coco(tmp_path / "coco", 4)
    spec = spec_file(tmp_path, "augment = [center_crop(64), hflip()]")
    err = train_error(tmp_path, capsys, folder, spec)
    assert "augment: center_crop is not supported with per-object targets" in err


# -- mAP: pycocotools on detections whose AP is known ------------------------------------------


def truth_rows(*boxes):
    return np.array([[0, *b, 1] for b in boxes], np.float64)


def found_rows(*scored):
    return np.array([[0, *b, s, 1] for b, s in scored], np.float64)


def test_map_of_perfect_detections_is_one():
    truth = np.array([[0, 5, 5, 20, 20, 1], [0, 30, 30, 50, 45, 2], [1, 2, 3, 12, 40, 1]], float)
    found = np.concatenate([truth[:, :5], np.full((3, 1), 0.9), truth[:, 5:]], axis=1)
    assert mean_average_precision(truth, found, 2) == {"map": 1.0, "map50": 1.0}


def test_map_with_a_false_positive_above_the_true_one():
    """Precision 1/2 at recall 1, 0 before: every one of the 101 points of the curve is 0.5."""
    truth = truth_rows((10, 10, 30, 30))
    found = found_rows(((40, 40, 60, 60), 0.9), ((10, 10, 30, 30), 0.8))
    result = mean_average_precision(truth, found, 1)
    assert result["map50"] == pytest.approx(0.5) and result["map"] == pytest.approx(0.5)


def test_map_interpolates_precision_over_101_recall_points():
    """Two objects; hit (0.9), miss (0.8), hit (0.7): precision 1 up to recall 0.5 (51 of
    the 101 points), then the envelope 2/3: (51 + 50 * 2/3) / 101."""
    truth = truth_rows((0, 0, 10, 10), (20, 20, 30, 30))
    found = found_rows(((0, 0, 10, 10), 0.9), ((40, 40, 50, 50), 0.8), ((20, 20, 30, 30), 0.7))
    result = mean_average_precision(truth, found, 1)
    assert result["map50"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_map_over_iou_thresholds():
    """IoU 100/160 = 0.625 is a hit at thresholds .50, .55 and .60, 3 of the 10: mAP 0.3."""
    result = mean_average_precision(
        truth_rows((0, 0, 10, 10)), found_rows(((0, 0, 10, 16), 0.9)), 1
    )
    assert result == {"map": pytest.approx(0.3), "map50": pytest.approx(1.0)}


def test_map_without_detections_is_zero_and_without_truth_none():
    truth = truth_rows((0, 0, 10, 10))
    assert mean_average_precision(truth, np.zeros((0, 7)), 1) == {"map": 0.0, "map50": 0.0}
    assert (
        mean_average_precision(np.zeros((0, 6)), found_rows(((0, 0, 5, 5), 0.5)), 1)["map"] is None
    )


def test_eval_reports_map_and_draws_the_detections(tmp_path, capsys):
    folder = write_coco(tmp_path / "coco", 8)
    spec = spec_file(tmp_path)
    assert (
        main(
            [
                "train",
                str(spec),
                "--data",
                str(folder),
                "--val-split",
                "0",
                "--out",
                str(tmp_path / "r"),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    capsys.readouterr()
    weights = tmp_path / "r" / "last.safetensors"
    assert main(["eval", str(spec), "--weights", str(weights), "--data", str(folder)]) == 0
    out = capsys.readouterr().out
    values = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert 0.0 <= float(values["map50"]) <= 1.0 and 0.0 <= float(values["map"]) <= float(
        values["map50"]
    )
    drawn = np.asarray(Image.open(tmp_path / "r" / "detections.png").convert("RGB")).astype(int)
    red = (drawn[..., 0] > 200) & (drawn[..., 1] < 60) & (drawn[..., 2] < 60)
    green = (drawn[..., 1] > 200) & (drawn[..., 0] < 60) & (drawn[..., 2] < 60)
    assert red.sum() > 50 and green.sum() > 50  # detections and ground truth drawn
