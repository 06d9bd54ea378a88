"""Image folders: `dslc train --data DIR` where DIR holds one subfolder per class of PNG or
JPEG files. The folder is scanned before training (every file's header is read by Pillow, so a
file that is no image, an empty class and sizes the pipeline cannot bring to the model's size
are errors naming the file); the pixels are decoded lazily, per batch, by the workers of a
torch DataLoader, through the spec's preprocess or augment steps (dslc.transforms).

Class names are the subfolder names, sorted; class i is the i-th. Pixels are scaled to [0, 1]
before normalize, as torchvision's ToTensor does."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dslc import transforms
from dslc.errors import DslcError
from dslc.runtime.train import data
from dslc.runtime.train.contract import Contract

SUFFIXES = (".png", ".jpg", ".jpeg")
MODES = {1: "L", 3: "RGB"}


def is_folder(text: str | None) -> bool:
    """A directory of class folders (a directory of IDX files is MNIST's format)."""
    path = Path(text) if text else None
    return bool(path and path.is_dir() and not any("idx" in p.name for p in path.iterdir()))


@dataclass
class Folder:
    root: Path
    classes: list[str]
    files: list[Path]
    labels: np.ndarray  # int64, one per file
    sizes: list[tuple[int, int]]  # (height, width) per file


def scan(root: Path, known: list[str] | None = None) -> Folder:
    """The images of `root`, labelled by folder; `known`: the training set's classes, which a
    validation folder's classes must be among."""
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    loose = [p for p in entries if not p.is_dir()]
    if loose:
        raise DslcError(
            f"{loose[0]}: an image folder holds one subfolder per class, not files",
            hint=f"move it into a class folder, e.g. {root / 'CLASS' / loose[0].name}",
        )
    if not entries:
        raise DslcError(f"image folder {root} is empty", hint="give it one subfolder per class")
    classes = known or [p.name for p in entries]
    files, labels, sizes = [], [], []
    for folder in entries:
        if folder.name not in classes:
            raise DslcError(
                f"{folder}: class '{folder.name}' is not among the training classes",
                hint=f"the classes are {', '.join(classes)}",
            )
        images = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        if not images:
            raise DslcError(f"class folder {folder} holds no images")
        for path in images:
            sizes.append(header(path))
            files.append(path)
            labels.append(classes.index(folder.name))
    return Folder(root, list(classes), files, np.array(labels, np.int64), sizes)


def header(path: Path) -> tuple[int, int]:
    """The (height, width) of the image at `path`, from its header."""
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        raise DslcError(f"{path}: class folders hold images, not folders")
    if path.suffix.lower() not in SUFFIXES:
        raise DslcError(f"{path} is not a PNG or JPEG file", hint="remove it from the folder")
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DslcError(f"cannot read image {path} (not an image, or corrupt): {err}") from None


def image_input(c: Contract) -> tuple[str, str, tuple[int, int, int]]:
    """The model's image input, its class-label target, and (channels, height, width)."""
    inputs, targets = list(c.inputs.items()), list(c.targets.items())
    ok = len(inputs) == 1 and len(targets) == 1
    if ok:
        (x, (dtype, shape)), (y, (ydtype, yshape)) = inputs[0], targets[0]
        ok = (
            dtype.startswith("float")
            and len(shape) == 4
            and all(isinstance(d, int) for d in shape[1:])
            and shape[1] in MODES
            and ydtype.startswith("int")
            and len(yshape) == 1
        )
    if not ok:
        raise DslcError(
            f"an image folder trains a model with one image input f32[N, C, H, W] (C 1 or 3, "
            f"H and W numbers) and one class-label target i64[N]; model {c.name} declares "
            + ", ".join(f"{k}: {d}{list(s)}" for k, (d, s) in c.arrays.items()),
            hint="use .npz data for other models",
        )
    return x, y, (int(shape[1]), int(shape[2]), int(shape[3]))


def check_sizes(folder: Folder, pipelines: dict[str, transforms.Pipeline], chw: tuple) -> None:
    """Every image brought to the model's height and width by each pipeline."""
    want = chw[1:]
    for key, pipeline in pipelines.items():
        for path, hw in zip(folder.files, folder.sizes, strict=True):
            got = transforms.output_size(pipeline, hw)
            if got == want:
                continue
            mixed = len(set(folder.sizes)) > 1
            which = f"{key} makes it" if pipeline else "with no preprocess steps it stays"
            raise DslcError(
                f"{path}: the image is {hw[1]}x{hw[0]} (width x height); {which} "
                f"{got[1]}x{got[0]}, but the model takes {want[1]}x{want[0]}"
                + (f" (the images come in {len(set(folder.sizes))} sizes)" if mixed else ""),
                hint=f"add resize([{want[0]}, {want[1]}]) or a crop to {key}: "
                f"`{key} = [resize({min(want)}), center_crop([{want[0]}, {want[1]}])]`",
            )


class ImageSet:
    """Images decoded on demand; the same interface as data.Dataset (len, take, batches)."""

    def __init__(
        self,
        folder: Folder,
        index: np.ndarray,
        pipeline: transforms.Pipeline,
        names: tuple[str, ...],
        channels: int,
        seed: int,
        train: bool,
        workers: int,
    ) -> None:
        self.folder, self.index, self.pipeline = folder, index, pipeline
        self.names, self.mode, self.seed = names, MODES[channels], seed
        self.train, self.workers = train, workers
        self.source = str(folder.root)
        self.classes: list[str] | None = None
        self.loader: Any = None  # the DataLoader, once batches() first needs workers
        self.plan = _Plan()
        norm = transforms.normalization(pipeline)
        self.norm = (
            None if norm is None else tuple(np.array(v, np.float32)[:, None, None] for v in norm)
        )
        if norm is not None and len(norm[0]) != channels:
            raise DslcError(
                f"normalize gives {len(norm[0])} means and stds, but the images have "
                f"{channels} channel{'s' if channels != 1 else ''}"
            )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        """Example `key[0]` in epoch `key[1]`: (pixels, label), or the error as a string (an
        exception in a worker would come back as a traceback in the message)."""
        import torch

        i, epoch = key
        n = int(self.index[i])
        try:
            pixels = self.pixels(n, self.rng(n, epoch))
        except DslcError as err:
            return err.message
        return torch.from_numpy(pixels), int(self.folder.labels[n])

    def rng(self, n: int, epoch: int) -> Any:
        """Example `n`'s random draws in `epoch`: the same whatever the workers."""
        return np.random.default_rng([self.seed, epoch, n] if self.train else [n])

    def pixels(self, n: int, rng: Any, normalize: bool = True) -> np.ndarray:
        image = transforms.apply(self.pipeline, self.decode(n), rng)
        return self.array(image, normalize)

    def decode(self, n: int) -> Any:
        """Image `n` as a Pillow image of the model's mode."""
        from PIL import Image, UnidentifiedImageError

        path = self.folder.files[n]
        try:
            with Image.open(path) as file:
                return file.convert(self.mode)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise DslcError(f"cannot decode image {path} (truncated or corrupt?): {err}") from None

    def array(self, image: Any, normalize: bool = True) -> np.ndarray:
        """A Pillow image as (C, H, W) floats in [0, 1], then normalized."""
        array = np.asarray(image, np.float32) / np.float32(255)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        if normalize and self.norm is not None:
            array = (array - self.norm[0]) / self.norm[1]
        return np.ascontiguousarray(array)

    def take(self, index: Any, epoch: int = 0) -> dict:
        keys = range(len(self))[index] if isinstance(index, slice) else [int(i) for i in index]
        return self.collate([self[(i, epoch)] for i in keys], self.names)

    @staticmethod
    def collate(items: list, names: tuple[str, ...]) -> dict:
        """A batch of what __getitem__ gives (workers call it too: a function, not a method)."""
        return _collate(items, names)

    def batches(self, chunks: list, epoch: int) -> Any:
        """The batches of example indices `chunks`: decoded here without workers, else by
        `workers` processes ahead of the loop, started once and kept across epochs."""
        plan = [[(int(i), epoch) for i in chunk] for chunk in chunks]
        if not self.workers:
            yield from (self.collate([self[key] for key in keys], self.names) for keys in plan)
            return
        if self.loader is None:
            self.loader = self._loader()
        self.plan.batches = plan
        for batch in self.loader:
            if isinstance(batch, str):
                raise DslcError(batch)
            yield batch

    def _loader(self) -> Any:
        from torch.utils.data import DataLoader

        return DataLoader(
            self,  # type: ignore[arg-type]
            batch_sampler=self.plan,  # type: ignore[arg-type]
            num_workers=self.workers,
            prefetch_factor=2,
            persistent_workers=True,
            collate_fn=partial(_collate_or_error, names=self.names, collate=type(self).collate),
        )

    def __getstate__(self) -> dict:
        return {**self.__dict__, "loader": None}  # a worker gets the data set, not the loader


class _Plan:
    """The batches of the current epoch, for a DataLoader that outlives one (the sampler is
    read in the training process, so the epoch's batches can change under it)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _collate_or_error(items: list, names: tuple[str, ...], collate: Any) -> Any:
    errors = [item for item in items if isinstance(item, str)]
    return errors[0] if errors else collate(items, names)


def _collate(items: list, names: tuple[str, ...]) -> dict:
    import torch

    raise_errors(items)
    pixels = torch.stack([p for p, _ in items])
    return {names[0]: pixels, names[1]: torch.tensor([label for _, label in items])}


def raise_errors(items: list) -> None:
    """The first example that failed to decode (its message, from __getitem__)."""
    for item in items:
        if isinstance(item, str):
            raise DslcError(item)


def datasets(
    c: Contract, train_dir: str, val_dir: str | None, fraction: float, seed: int, workers: int
) -> tuple[ImageSet, ImageSet | None, list[str]]:
    """The training and validation sets of image folders (validation: `val_dir`, or a random
    `fraction` of `train_dir`, or none when 0), and the class names."""
    x, y, chw = image_input(c)
    steps = c.transforms
    evaluate = steps.get("preprocess", ())
    pipelines = {"preprocess": evaluate, "augment": steps.get("augment", evaluate)}
    folder = scan(Path(train_dir))
    check_sizes(folder, pipelines, chw)
    data.check_classes({y: folder.labels}, c.classes, c.name, train_dir)
    names = (x, y)
    index = np.arange(len(folder.files))
    held: Folder | None = None
    if val_dir:
        held = scan(Path(val_dir), folder.classes)
        check_sizes(held, {"preprocess": evaluate}, chw)
        val_index = np.arange(len(held.files))
    elif fraction:
        parts = data.split({"index": index}, fraction, seed, train_dir)
        index, val_index, held = parts[0]["index"], parts[1]["index"], folder
    train = ImageSet(folder, index, pipelines["augment"], names, chw[0], seed, True, workers)
    val = None
    if held is not None:
        val = ImageSet(held, val_index, evaluate, names, chw[0], seed, False, workers)
    return train, val, folder.classes
