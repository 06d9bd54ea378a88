"""The weights an ONNX model is built with: a user's state_dict checked against the spec, or
fresh initializers drawn from the spec's schemes."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from dslc.errors import DslcError
from dslc.ir.graph import Graph, ParamSpec
from dslc.ops import init


def resolve_weights(graph: Graph, weights: Any, seed: int) -> dict[str, np.ndarray]:
    """Every parameter and buffer as a numpy array, keyed by state_dict name."""
    expected = dict(graph.parameters(buffers=True))
    if weights is None:
        return _sample_all(expected, seed)
    if isinstance(weights, str | os.PathLike):
        from dslc.backends.weights import load_weights

        weights = load_weights(weights)
    arrays = {
        k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        for k, v in weights.items()
    }
    prefix = graph.weight_prefix
    if prefix and not expected.keys() & arrays.keys():  # the full model's weights: take the part
        arrays = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    problems = [f"missing '{k}' {list(p.shape)}" for k, p in expected.items() if k not in arrays]
    problems += [
        f"'{k}' has shape {list(arrays[k].shape)}, the spec needs {list(p.shape)}"
        for k, p in expected.items()
        if k in arrays and tuple(arrays[k].shape) != p.shape
    ]
    tied = graph.ties()  # a state_dict holds a tied tensor under both keys: the owner's is used
    problems += [
        f"unexpected '{k}'"
        for k in arrays
        if k not in expected and k not in tied and not k.endswith("num_batches_tracked")
    ]
    if problems:
        raise DslcError(
            f"the weights do not fit model {graph.name}:\n  " + "\n  ".join(problems),
            hint="save them with torch.save(model.state_dict(), path) from the generated module",
        )
    return arrays


PIECE = 1 << 22  # elements drawn by one generator: GPT-2's 38.6M-value embedding is 10 pieces


def _sample_all(expected: dict[str, ParamSpec], seed: int) -> dict[str, np.ndarray]:
    """Fresh initializers, each piece of PIECE values drawn by its own generator (seeded by the
    seed, the parameter's index and the piece's), so threads draw them in any order with the
    same result: NumPy releases the GIL while it fills an array, and GPT-2 has 124M values."""
    arrays = {k: np.empty(p.shape, np.float32) for k, p in expected.items()}
    pieces = [
        (i, j, k, p)
        for i, (k, p) in enumerate(expected.items())
        for j in range(
            max(1, -(-math.prod(p.shape) // PIECE)) if p.init.kind in init.ELEMENTWISE else 1
        )
    ]

    def draw(task: tuple[int, int, str, ParamSpec]) -> None:
        i, j, key, p = task
        if p.init.kind not in init.ELEMENTWISE:
            arrays[key] = init.sample(p.init, p.shape, np.random.default_rng([seed, i]))
            return
        piece = arrays[key].reshape(-1)[j * PIECE : (j + 1) * PIECE]
        init.fill(p.init, piece, np.random.default_rng([seed, i, j]), p.shape)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(draw, pieces))
    return arrays
