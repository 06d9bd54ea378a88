"""Checkpoints of a run directory, written atomically and read without unpickling code.

    runs/NAME/last.safetensors   the latest weights   (dslc compile --target onnx --weights)
    runs/NAME/best.safetensors   the best weights by the monitored metric
    runs/NAME/trainer.pt         everything --resume needs, in one file: the weights again,
                                 optimizer, scheduler, RNG states and the position

trainer.pt holds the weights as well so that resuming reads a single file that is always
consistent: a kill between writing two files could otherwise pair weights of one step with the
optimizer of another. It holds only tensors and plain values, and is read with
torch.load(weights_only=True), which refuses anything else, after its size and zip members
are checked (dslc.untrusted); its parts are then checked against the model, optimizer,
schedule and run before any is used (docs/limits.md).

Every file is written to a temporary name in the same directory, fsynced, then moved over the
old one with os.replace, so a kill at any moment leaves the old file or the new, never half;
the temporary files a killed process leaves are removed when a run starts or resumes. The
.safetensors files are written by dslc itself, so identical runs give identical bytes."""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dslc import untrusted
from dslc.errors import DslcError

FORMAT = 1
STATE = "trainer.pt"


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise DslcError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp")  # what atomic_write names its files


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete the temporary files of writes that a killed process never finished: a SIGKILL
    skips atomic_write's cleanup and would leave `.trainer.pt.<pid>.tmp` forever. A file of
    a process that is still running (another dslc writing here) is left alone. Returns the
    files removed."""
    removed = []
    for path in sorted(directory.glob(".*.tmp")):
        match = _TEMP.fullmatch(path.name)
        if match is None or _alive(int(match["pid"])):
            continue
        try:
            path.unlink()
        except OSError:
            continue  # not ours to remove, or gone already: harmless either way
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    """Whether a process `pid` exists (signal 0 checks without sending anything)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process: running; a pid out of range: leave it be
    return True


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_weights(path: Path, state_dict: dict, metadata: dict[str, str]) -> None:
    """The state_dict without the aliases of tied weights: safetensors refuses tensors that
    share memory, and the owner's key is all a loader needs (`load_weights`)."""
    aliases = tied_aliases(state_dict)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items() if k not in aliases}
    atomic_write(path, lambda tmp: write_safetensors(tmp, tensors, metadata))


# torch dtype name -> safetensors dtype
_ST_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
    "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}  # fmt: skip


def write_safetensors(path: Path, tensors: dict, metadata: dict[str, str]) -> None:
    """A .safetensors file whose bytes depend only on the tensors and metadata: safetensors'
    own writer keeps the metadata in a Rust HashMap, so two identical runs wrote the keys in
    different orders. Here the header is JSON with sorted keys, tensors in name order, and
    the header padded with spaces to 8 bytes, as the format allows."""
    import torch
    from safetensors.torch import save_file

    if any(str(t.dtype).removeprefix("torch.") not in _ST_DTYPES for t in tensors.values()):
        save_file(tensors, str(path), metadata=metadata)  # a dtype dslc never generates
        return
    header: dict = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        nbytes = t.numel() * t.element_size()
        dtype = _ST_DTYPES[str(t.dtype).removeprefix("torch.")]
        header[name] = {
            "dtype": dtype,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with path.open("wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for name in sorted(tensors):
            f.write(tensors[name].reshape(-1).view(torch.uint8).numpy().data)


def tied_aliases(state_dict: dict) -> set[str]:
    """Keys whose tensor is the same memory as an earlier key's (a tied weight, such as an
    output head sharing the embedding matrix); the first key of each is the owner."""
    seen: set[tuple] = set()
    aliases = set()
    for key, t in state_dict.items():
        where = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride())
        if where in seen:
            aliases.add(key)
        seen.add(where)
    return aliases


def load_weights(module: Any, path: Path) -> None:
    """Load a safetensors file into `module`; keys missing from the file are allowed only
    when they are tied aliases, which loading the owner fills."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        untrusted.check_size(path, "weights")
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise DslcError(f"cannot read weights {path}: {err}") from None
    try:
        result = module.load_state_dict(tensors, strict=False)
    except RuntimeError as err:  # a shape mismatch: weights of another configuration
        raise DslcError(
            f"the weights in {path} do not fit the model: {str(err).splitlines()[-1].strip()}",
            hint="give the same --param values the model was trained with",
        ) from None
    missing = set(result.missing_keys) - tied_aliases(module.state_dict())
    wrong = sorted(missing) + sorted(result.unexpected_keys)
    if wrong:
        raise DslcError(
            f"the weights in {path} do not fit the model: "
            f"{len(missing)} missing and {len(result.unexpected_keys)} unexpected keys "
            f"(first: {wrong[0]})",
            hint="give the spec, and the --param values, the weights were trained with",
        )


def save_state(directory: Path, state: dict[str, Any]) -> None:
    import torch

    atomic_write(directory / STATE, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_state(directory: Path) -> dict[str, Any]:
    """trainer.pt, after its size and zip members are checked and before any of it is used:
    its structure (`check_structure`); the trainer checks it against the model and optimizer."""
    import pickle

    import torch

    path = directory / STATE
    if not path.exists():
        raise DslcError(
            f"--resume: {path} does not exist",
            hint="a run writes it after its first epoch, or earlier with --checkpoint-every N",
        )
    try:
        untrusted.check_size(path, "checkpoint")
        with zipfile.ZipFile(path) as archive:
            untrusted.check_zip(archive, path, "checkpoint")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise DslcError(f"--resume: cannot read {path} (corrupt?): {err}") from None
    except zipfile.BadZipFile as err:
        raise DslcError(f"--resume: {path} is not a dslc trainer checkpoint: {err}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DslcError(f"--resume: {path} is not a dslc trainer checkpoint (format {FORMAT})")
    check_structure(state, path)
    return state


def refuse(path: Path, why: str) -> DslcError:
    """A trainer.pt that loads but cannot be resumed from: what is wrong, and where."""
    return DslcError(
        f"--resume: {path} {why}",
        hint="resume with the spec, --param values and dslc the run was started with, "
        "or start afresh with another --out",
    )


# What every trainer.pt holds: key -> (the types its value may have, what that is in words).
_LAYOUT: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((dict,), "a dict of tensors"),
    "optimizer": ((dict,), "an optimizer state_dict"),
    "scheduler": ((dict, type(None)), "a scheduler state_dict or None"),
    "rng": ((dict,), "a dict of random states"),
    "position": ((dict,), "a dict of counters"),
    "settings": ((dict,), "a dict of settings"),
}


def check_structure(state: dict[str, Any], path: Path) -> None:
    """The keys and types trainer.pt must have, before any is used; `Trainer.restore` checks
    them against the model and optimizer."""
    import torch

    for key, (types, what) in _LAYOUT.items():
        if key not in state:
            raise refuse(path, f"lacks `{key}` ({what}): not a whole trainer checkpoint")
        if not isinstance(state[key], types):
            raise refuse(path, f"holds a {type(state[key]).__name__} as `{key}`, not {what}")
    bad = [k for k, v in state["model"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise refuse(path, f"holds a {type(state['model'][bad[0]]).__name__} as model.{bad[0]}")
    optimizer = state["optimizer"]
    if not isinstance(optimizer.get("state"), dict) or not isinstance(
        optimizer.get("param_groups"), list
    ):
        raise refuse(path, "holds an optimizer state without `state` and `param_groups`")
    check_rng(state["rng"], path)


def check_rng(rng: dict[str, Any], path: Path) -> None:
    """torch's CPU generator state and the shuffling generator's: byte tensors of the size
    torch's own state has (a garbage state would crash set_rng_state, or worse, not)."""
    import torch

    size = torch.get_rng_state().numel()
    for key in ("torch", "shuffle"):
        value = rng.get(key)
        if not (isinstance(value, torch.Tensor) and value.dtype == torch.uint8):
            got = type(value).__name__ if not isinstance(value, torch.Tensor) else value.dtype
            raise refuse(path, f"holds no random state rng.{key} (a uint8 tensor), but {got}")
        if value.numel() != size:
            raise refuse(
                path, f"holds a random state rng.{key} of {value.numel()} bytes, not {size}"
            )
    cuda = rng.get("cuda")
    if cuda is not None and not (
        isinstance(cuda, list | tuple)
        and all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda)
    ):
        raise refuse(path, "holds a garbage CUDA random state rng.cuda")


def check_model(saved: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """The saved weights have the model's names and shapes (tied aliases may be absent)."""
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise refuse(
            path,
            f"holds weights of another model: {len(missing)} missing and {len(unexpected)} "
            f"unexpected (first: {first})",
        )
    for key, tensor in expected.items():
        if tuple(saved[key].shape) != tuple(tensor.shape):
            raise refuse(
                path,
                f"holds {key} of shape {list(saved[key].shape)}, "
                f"but the model's is {list(tensor.shape)}",
            )


def check_optimizer(saved: dict[str, Any], optimizer: Any, path: Path, kind: str | None) -> None:
    """The saved optimizer state is this optimizer's, for these parameters: torch's
    load_state_dict checks little, and a mismatch would crash (or mislead) steps later.
    `kind`: the class name trainer.pt records (older checkpoints lack it)."""
    mine = type(optimizer).__name__
    if kind is not None and kind != mine:
        raise refuse(path, f"holds the state of a {kind} optimizer, but the spec's is {mine}")
    fresh = optimizer.state_dict()["param_groups"]
    groups = saved["param_groups"]
    sizes = [len(g.get("params", ())) if isinstance(g, dict) else -1 for g in groups]
    if sizes != [len(g["params"]) for g in fresh]:
        raise refuse(path, "holds an optimizer state for other parameters (another model?)")
    for group, ours in zip(groups, fresh, strict=True):
        foreign = sorted(set(group) - set(ours))
        if foreign:  # e.g. SGD's momentum in an Adam run
            raise refuse(
                path,
                f"holds the state of another optimizer (it sets {', '.join(foreign)}), "
                f"not the spec's {mine}",
            )
    _check_moments(saved["state"], groups, optimizer, path)


def _check_moments(state: dict, groups: list, optimizer: Any, path: Path) -> None:
    """Each parameter's optimizer tensors (momenta, running averages) have its shape."""
    import torch

    params = [p for group in optimizer.param_groups for p in group["params"]]
    ids = [i for g in groups for i in g["params"]]
    if not all(isinstance(i, int) for i in ids):
        raise refuse(path, "holds an optimizer state whose parameters are not numbered")
    shapes = dict(zip(ids, [p.shape for p in params], strict=True))
    for index, entry in state.items():
        if index not in shapes or not isinstance(entry, dict):
            raise refuse(path, f"holds optimizer state for an unknown parameter {index!r}")
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape != shapes[index]:
                raise refuse(
                    path,
                    f"holds optimizer state {name} of shape {list(value.shape)} for a parameter "
                    f"of shape {list(shapes[index])} (weights of another shape?)",
                )


def check_scheduler(saved: dict[str, Any] | None, scheduler: Any, path: Path) -> None:
    """A saved schedule's values have the types of this schedule's (a torch scheduler's
    load_state_dict takes any dict, and a string for last_epoch breaks the next step). Keys
    only one side has, and values that are None on either, are left to torch: a new torch
    may add state that an older checkpoint lacks."""
    if scheduler is None or saved is None:
        return
    for key, value in scheduler.state_dict().items():
        if key not in saved or value is None or saved[key] is None:
            continue
        numbers = all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in (value, saved[key])
        )
        if type(saved[key]) is not type(value) and not numbers:
            raise refuse(
                path,
                f"holds a learning-rate schedule whose `{key}` is of type "
                f"{type(saved[key]).__name__}, not {type(value).__name__}",
            )


def rng_state(shuffle_state: Any, cuda: bool) -> dict[str, Any]:
    """The random states a resumed run needs to repeat the uninterrupted one exactly."""
    import torch

    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if cuda else None,
        "shuffle": shuffle_state,
    }


def restore_rng(states: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
