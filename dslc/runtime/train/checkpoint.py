"""Checkpoints of a run directory, written atomically and read without unpickling code.

    runs/NAME/last.safetensors   the latest weights   (dslc compile --target onnx --weights)
    runs/NAME/best.safetensors   the best weights by the monitored metric
    runs/NAME/trainer.pt         everything --resume needs, in one file: the weights again,
                                 optimizer, scheduler, RNG states and the position

trainer.pt holds the weights as well so that resuming reads a single file that is always
consistent: a kill between writing two files could otherwise pair weights of one step with the
optimizer of another. It holds only tensors and plain values, and is read with
torch.load(weights_only=True), which refuses anything else.

Every file is written to a temporary name in the same directory, fsynced, then moved over the
old one with os.replace, so a kill at any moment leaves the old file or the new, never half."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    from safetensors.torch import save_file

    aliases = tied_aliases(state_dict)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items() if k not in aliases}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


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
    import pickle

    import torch

    path = directory / STATE
    if not path.exists():
        raise DslcError(
            f"--resume: {path} does not exist",
            hint="a run writes it after its first epoch, or earlier with --checkpoint-every N",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise DslcError(f"--resume: cannot read {path} (corrupt?): {err}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DslcError(f"--resume: {path} is not a dslc trainer checkpoint (format {FORMAT})")
    return state


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
