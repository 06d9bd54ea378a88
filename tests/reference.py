"""torchvision as an independent reference implementation for the tests.

`torchvision_models()` returns the `torchvision.models` module, or skips the calling test with
the reason when torchvision cannot be imported. `state_dict_keys(model)` renders a model's
state_dict as the golden key lists under tests/golden/torchvision/ (`key [shape]` a line).

How torchvision is installed, and why the import needs help
-----------------------------------------------------------
The Makefile installs torchvision 0.28.0 (the release paired with torch 2.13.0) with
`pip install --no-deps`, so that pip cannot replace the pinned CPU torch with another build.
The only torchvision 0.28.0 wheel in the local package mirror is the CUDA build
(`torchvision.__version__ == "0.28.0+cu130"`): its compiled extension `torchvision/_C.so` is
linked against `libc10_cuda.so` and `libtorch_cuda.so`, which the CPU torch does not ship, so
`torch.ops.load_library` fails with OSError, `torchvision.extension._has_ops()` is False and
`torchvision.ops.nms` and the other C++ ops are unavailable. (No `+cpu` wheel can be fetched:
the machine has no route to download.pytorch.org.)

`torchvision.extension` tolerates the missing library, but `import torchvision` then fails in
`torchvision/_meta_registrations.py`: its decorator `@torch.library.register_fake(
"torchvision::nms")` (line 163, the one registration not guarded by `_has_ops()`) raises
`RuntimeError: operator torchvision::nms does not exist`. That module only registers fake
(meta) kernels for the C++ ops, which do not exist here, so `torchvision_models()` first tries
the plain import and, if it fails, drops the half-imported `torchvision*` modules and retries
with an empty module standing in for `torchvision._meta_registrations` in `sys.modules` (it
stays there, so that a later `import torchvision` finds the same stand-in). Nothing else is
stubbed: the pure-Python model code (`torchvision.models.resnet18` etc.) needs no C++ op.
With a working extension (a CPU wheel, or a CUDA torch) the plain import succeeds and no stub
is used.

`import torchvision` also needs Pillow (`torchvision.datasets` imports `PIL.Image` at import
time, although the models never use it). Pillow is not installed for torchvision (--no-deps):
it is already in the environment as a dependency of matplotlib.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import pytest

_STUB = "torchvision._meta_registrations"


def _purge_torchvision() -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def torchvision_models() -> Any:
    """The `torchvision.models` module; skips the calling test if torchvision cannot be imported."""
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip(
            "torchvision is not installed (the Makefile installs it: "
            "pip install --no-deps -c constraints.txt torchvision)"
        )
    try:
        return importlib.import_module("torchvision.models")
    except Exception as first:  # noqa: BLE001 - any import failure: retry with the stub
        first_error = f"{type(first).__name__}: {first}"
    # The C++ extension did not load (see the module docstring): stand in for the module that
    # registers fake kernels for its ops, and import again.
    _purge_torchvision()
    sys.modules[_STUB] = types.ModuleType(_STUB)
    try:
        return importlib.import_module("torchvision.models")
    except Exception as second:  # noqa: BLE001
        _purge_torchvision()
        pytest.skip(
            f"torchvision cannot be imported ({first_error}; with "
            f"{_STUB} stubbed: {type(second).__name__}: {second})"
        )


def state_dict_keys(model: Any) -> str:
    """One line per state_dict entry, in state_dict order, buffers included: `key [d0, d1, ...]`
    (`[]` for a scalar such as num_batches_tracked)."""
    return "".join(f"{key} {list(value.shape)}\n" for key, value in model.state_dict().items())


def key_file(name: str) -> str:
    """The text of tests/golden/torchvision/<name>.keys: a `#` header saying how it was made,
    then `state_dict_keys` of `torchvision.models.<name>(weights=None)`. The model is built
    on the meta device (shapes only: no memory, no initialisation cost); the keys and shapes are
    those of a model built on the CPU."""
    import torch

    models = torchvision_models()
    import torchvision

    version = torchvision.__version__.split("+")[0]
    with torch.device("meta"):
        model = getattr(models, name)(weights=None)
    return (
        f"# torchvision {version}: torchvision.models.{name}(weights=None).state_dict(), "
        "one `key [shape]` line per entry in state_dict order, buffers included "
        "(tests/reference.py key_file)\n" + state_dict_keys(model)
    )


def parameter_count(model: Any) -> int:
    """The number of trainable parameter elements (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
