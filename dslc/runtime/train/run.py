"""`dslc train`: compile a spec in-process, load and check its data, train, and leave a run
directory behind (checkpoints, metrics.jsonl, curves.png, optionally model.onnx)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dslc.api import Spec, load
from dslc.errors import DslcError
from dslc.runtime.train import (
    annotated,
    checkpoint,
    coco,
    data,
    distributed,
    experiment,
    finetune,
    images,
    labels,
    objects,
    precision,
    report,
    text,
    tokenizer,
)
from dslc.runtime.train.contract import Contract, contract
from dslc.runtime.train.loop import Settings, Trainer


@dataclass
class Options:
    spec: str
    data: str
    out: Path
    val: str | None = None
    val_split: float | None = None  # None: 0.1 when there is no --val
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    resume: bool = False
    device: str = "cpu"
    export_onnx: bool = False
    quantize: str | None = None  # with export_onnx: also model.<quantize>.onnx, gated
    checkpoint_every: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)
    tokenizer: str | None = None  # language models: bytes or bpe (None: the spec's setting)
    init_from: str | None = None  # weights to start from (None: the spec's init_from)
    allow_missing: list[str] = field(default_factory=list)
    force_resume: bool = False  # resume even into a changed spec, --param values or data
    accumulate: int = 1  # micro-batches of batch_size per optimizer step
    precision: str = "fp32"  # fp32, bf16 (autocast) or fp16 (autocast and a grad scaler)
    workers: int = 2  # image folders: processes decoding images ahead of the loop
    bake_normalize: bool = False  # --export-onnx: the ONNX model takes raw pixels, 0..255


def train(opts: Options) -> int:
    """Exit status: 0 done, 1 ONNX parity failed, 128 + signal when stopped by one."""
    spec = load(opts.spec, opts.params)
    c = contract(spec)
    device = _device(opts.device)  # checks CUDA before joining a process group
    world = distributed.init(opts.device)
    try:
        if device.type == "cuda":
            device = _cuda(world.local_rank)  # one GPU per process under torchrun
        status = _train(spec, c, opts, world, device)
    except BaseException:
        distributed.close(world, wait=False)  # a peer may be gone: waiting could hang
        raise
    distributed.close(world, wait=True)
    return status


def _train(spec: Spec, c: Contract, opts: Options, world: distributed.World, device: Any) -> int:
    if opts.bake_normalize and not opts.export_onnx:
        raise DslcError("--bake-normalize changes the exported model: give --export-onnx too")
    settings = _settings(c, opts)
    train_set, val_set, tokens = _datasets(spec, c, opts)
    if world.distributed and settings.batch_size < world.size:
        raise DslcError(f"batch size {settings.batch_size} is smaller than {world.size} processes")
    if (world.distributed or settings.accumulate > 1) and c.reduction == "mixed":
        what = "data-parallel training" if world.distributed else "--accumulate"
        raise DslcError(
            f"{what} needs the loss terms reduced alike (all mean or all sum)",
            hint="give every loss term the same reduction=, or train in one process "
            "without --accumulate",
        )
    if world.distributed and c.training.get("unfreeze_at"):
        raise DslcError(
            "unfreeze_at is not supported under torchrun yet: DistributedDataParallel fixes "
            "at its start which parameters have gradients",
            hint="train in one process, or drop unfreeze_at",
        )
    if settings.monitor == "val_accuracy" and (val_set is None or not c.metrics):
        raise DslcError("the spec monitors val_accuracy, which needs validation data and a metric")
    _prepare_out(opts, world)
    _record(spec, opts, world.main)
    if tokens is not None and world.main:
        tokenizer.save(tokens.tokenizer, opts.out / tokenizer.FILE)
    if train_set.classes and world.main:
        labels.save(opts.out, train_set.classes)
    _deterministic(device)
    trainer = Trainer(c, settings, world, device, train_set, val_set)
    if opts.resume:
        _resume(trainer, opts.out, settings)
    elif start := _init_from(spec, c, opts):
        report.say(finetune.init_from(trainer.module, start, _allowed(c, opts), c.name))
    if world.main:
        report.say(_banner(spec, c, settings, len(train_set), val_set, world))
        if slow := precision.note(opts.precision, device):
            report.say(slow)
    stopped = trainer.run()
    if stopped is not None:
        if world.main:
            report.say(
                f"stopped by signal {stopped}; checkpoint in {opts.out}; continue with --resume"
            )
        return 128 + stopped
    return _finish(spec, c, trainer, opts, tokens.context if tokens else None)


def _settings(c: Contract, opts: Options) -> Settings:
    for key in ("epochs", "batch_size"):
        if getattr(opts, key):
            c.override(key, getattr(opts, key))
    monitor = c.training["monitor"]
    return Settings(
        batch_size=opts.batch_size or c.training["batch_size"],
        epochs=opts.epochs or c.training["epochs"],
        seed=opts.seed,
        out=opts.out,
        checkpoint_every=opts.checkpoint_every,
        accumulate=opts.accumulate,
        precision=opts.precision,
        monitor="train_loss" if monitor == "val_loss" and _no_val(opts) else monitor,
    )


def _init_from(spec: Spec, c: Contract, opts: Options) -> Path | None:
    """--init-from (relative to the current folder), else the spec's init_from (relative to
    the spec's folder)."""
    if opts.init_from:
        return Path(opts.init_from)
    written = c.training.get("init_from")
    if written is None:
        return None
    folder = Path(opts.spec).parent if opts.spec != "-" else Path()
    return folder / written


def _allowed(c: Contract, opts: Options) -> tuple[str, ...]:
    return (*c.training.get("allow_missing", ()), *opts.allow_missing)


def _no_val(opts: Options) -> bool:
    return opts.val is None and opts.val_split == 0


def _datasets(spec: Spec, c: Contract, opts: Options) -> tuple[data.Dataset, Any, text.Text | None]:
    """The training and validation sets, and for a language model on text its tokens."""
    if opts.val and opts.val_split:
        raise DslcError("give --val or --val-split, not both")
    fraction = 0.1 if opts.val_split is None else opts.val_split
    language = bool(c.tokens) and text.is_text(opts.data)
    if opts.tokenizer and not language:
        raise DslcError(
            "--tokenizer applies to language models trained on text",
            hint=f"model {c.name} has no token input read by an embedding, or --data is no .txt",
        )
    if coco.is_coco(opts.data) or coco.is_coco(opts.val):
        return (*_annotated(c, opts, fraction), None)
    if images.is_folder(opts.data) or images.is_folder(opts.val):
        return (*_folders(c, opts, fraction), None)
    tokens = _text(spec, c, opts, fraction) if language else None
    names: dict[str, list[str]] = {}  # class names of a CSV label column
    lay = objects.layout(c)
    if tokens is not None:
        arrays = data.check(tokens.train, c.arrays, c.name, opts.data)
        held = tokens.val
        val = data.check(held, c.arrays, c.name, opts.val or opts.data) if held else None
    else:
        arrays = data.load_for(c, opts.data, opts.columns, names)
        val = data.load_for(c, opts.val, opts.columns, names) if opts.val else None
        if val is None and not _no_val(opts):
            arrays, val = data.split(arrays, fraction, opts.seed, opts.data, lay)
    train = data.to_dataset(arrays, c.arrays, opts.data, lay)
    train.classes = next(iter(names.values()), None)
    val_set = data.to_dataset(val, c.arrays, opts.val or opts.data, lay) if val else None
    return train, val_set, tokens


def _folders(c: Contract, opts: Options, fraction: float) -> tuple[Any, Any]:
    if not images.is_folder(opts.data):
        raise DslcError(
            f"--val {opts.val} is an image folder, but --data {opts.data} is not",
            hint="train from an image folder too, or give validation data in --data's format",
        )
    if opts.val and not images.is_folder(opts.val):
        raise DslcError(f"--data {opts.data} is an image folder, so --val must be one too")
    train, val, classes = images.datasets(
        c, opts.data, opts.val, 0.0 if _no_val(opts) else fraction, opts.seed, opts.workers
    )
    train.classes = classes
    return train, val


def _annotated(c: Contract, opts: Options, fraction: float) -> tuple[Any, Any]:
    if opts.val and coco.is_coco(opts.data) != coco.is_coco(opts.val):
        raise DslcError(
            f"--data {opts.data} and --val {opts.val}: one is COCO-style JSON, the other not",
            hint="give both as COCO-style JSON (a .json file, or a folder with annotations.json)",
        )
    train, val, classes = annotated.datasets(
        c, opts.data, opts.val, 0.0 if _no_val(opts) else fraction, opts.seed, opts.workers
    )
    train.classes = classes
    return train, val


def _text(spec: Spec, c: Contract, opts: Options, fraction: float) -> text.Text:
    """Windows of tokens; the BPE tokenizer is trained on the training text, except when
    resuming, which takes the run's own tokenizer.json."""
    saved = opts.out / tokenizer.FILE
    return text.load(
        c,
        opts.data,
        opts.val,
        fraction,
        opts.tokenizer,
        saved if opts.resume and saved.exists() else None,
        text.max_positions(spec.graph),
    )


def _device(kind: str) -> Any:
    import torch

    if kind == "cuda":
        return _cuda(0)
    return torch.device("cpu")


def _cuda(index: int) -> Any:
    import torch

    if not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise DslcError(f"--device cuda: CUDA is not available ({why})", hint="use --device cpu")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _deterministic(device: Any) -> None:
    import torch

    if device.type == "cuda":  # cuBLAS is deterministic only with a fixed workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    # torch.use_deterministic_algorithms also sets an option of the compiler, whose import costs
    # seconds; dslc never compiles, so it flips the switch underneath directly.
    torch._C._set_deterministic_algorithms(True, warn_only=device.type == "cuda")


def _prepare_out(opts: Options, world: distributed.World) -> None:
    state = opts.out / checkpoint.STATE
    if not opts.resume and (state.exists() or (opts.out / report.METRICS).exists()):
        raise DslcError(
            f"{opts.out} already holds a run",
            hint="continue it with --resume, or give another --out",
        )
    if world.main:
        try:
            opts.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DslcError(f"cannot create {opts.out}: {err.strerror}") from None
        for path in checkpoint.remove_stale_temps(opts.out):
            report.say(f"removed {path.name}, left by a write that was killed")


def _record(spec: Spec, opts: Options, main: bool) -> None:
    """experiment.json: written when a run starts; on --resume, checked against it, by every
    process (so that all refuse together), written and reported by the main one."""
    rec = experiment.record(
        opts.spec, spec.source, opts.params, opts.data, opts.val, opts.val_split, spec.imported
    )
    if opts.resume and (opts.out / checkpoint.STATE).exists():
        say = report.say if main else (lambda _text: None)
        experiment.check_resume(opts.out, rec, opts.force_resume, say, write=main)
    elif not opts.resume and main:
        experiment.save(opts.out, rec)


def _resume(trainer: Trainer, out: Path, settings: Settings) -> None:
    state = checkpoint.load_state(out)
    saved = state.get("settings", {})
    keys: tuple[str, ...] = ("batch_size", "seed", "accumulate")
    keys += ("epochs",) if trainer.scheduler else ()  # a schedule is laid out over its epochs
    for key in keys:  # steps per epoch depend on the batch size and the accumulation
        if saved.get(key, 1 if key == "accumulate" else None) != getattr(settings, key):
            raise DslcError(
                f"--resume: the run in {out} used {key} {saved.get(key)}, "
                f"not {getattr(settings, key)}",
                hint=f"resume with the same --{key.replace('_', '-')}",
            )
    trainer.restore(state, out / checkpoint.STATE)
    if trainer.world.main:
        trainer.log.keep(trainer.pos.epoch)
        p = trainer.pos
        report.say(f"resuming {out} at epoch {p.epoch + 1}, step {p.step} of {trainer.steps}")


def _banner(spec: Spec, c: Contract, s: Settings, n: int, val: Any, world: Any) -> str:
    where = f", {world.size} processes" if world.distributed else ""
    held = f", {len(val)} validation" if val is not None else ""
    return (
        f"training {spec.name} ({spec.param_count:,} parameters) on {n} examples{held}: "
        f"{s.epochs} epochs, batch {s.batch_size}{_per_step(s)}, seed {s.seed}{where}"
    )


def _per_step(s: Settings) -> str:
    accumulated = f" x {s.accumulate} accumulated" if s.accumulate > 1 else ""
    return accumulated + (f", {s.precision} autocast" if s.precision != "fp32" else "")


def _draw_detections(c: Contract, trainer: Trainer, out: Path) -> None:
    """A detector's best weights' detections on a few validation images (training images
    without validation): detections.png."""
    from dslc.runtime.train.evaluate import draw_detections
    from dslc.runtime.train.mean_ap import PLOT

    if not c.detections:
        return
    best = out / "best.safetensors"
    if best.exists():
        checkpoint.load_weights(trainer.module, best)
    classes = trainer.train.classes
    shown = trainer.val or trainer.train
    if draw_detections(c, trainer.module, shown, classes, out / PLOT, trainer.device):
        report.say(f"wrote {out / PLOT}")


def _finish(spec: Spec, c: Contract, trainer: Trainer, opts: Options, context: int | None) -> int:
    if not trainer.world.main:
        return 0
    rows = trainer.log.rows()
    if rows:
        report.plot(rows, opts.out / report.PLOT, spec.name)
    p = trainer.pos
    why = "stopped early" if p.stopped_early else "done"
    best = "none" if p.best is None else f"{p.best:.4f}"
    report.say(
        f"{why} after {p.epoch} epochs: best {trainer.s.monitor} {best}; files in {opts.out}"
    )
    _draw_detections(c, trainer, opts.out)
    if not opts.export_onnx:
        return 0
    from dslc.runtime.train.export import export_onnx

    val = trainer.val or trainer.train
    classes = trainer.train.classes
    batch = trainer.s.batch_size
    status = export_onnx(spec, c, opts.out, val, batch, context, classes, opts.bake_normalize)
    if status or not opts.quantize:
        return status
    from dslc.runtime.quantized import train_export

    return train_export(spec, c, opts.out, opts.quantize, trainer.train, val)
