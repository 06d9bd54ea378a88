"""Unique names in one scope: `base`, then `base_2`, `base_3`, ... (after torch.fx's
_Namespace). The IR's value names, the ONNX node names and the generated Python's names all
come from one of these, each scope with its own."""

from __future__ import annotations


class Namespace:
    def __init__(self, taken: set[str] | frozenset[str] = frozenset()) -> None:
        self.taken: set[str] = set(taken)

    def create(self, base: str, sep: str = "_") -> str:
        """`base`, or `base_2`, ... (`sep` "" for class names: `Loss2`)."""
        candidate, k = base, 1
        while candidate in self.taken:
            k += 1
            candidate = f"{base}{'' if base.endswith('_') else sep}{k}"
        self.taken.add(candidate)
        return candidate

    def release(self, name: str) -> None:
        """Give a name back (a value renamed after the spec's name for it)."""
        self.taken.discard(name)
