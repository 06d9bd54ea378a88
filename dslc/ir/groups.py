"""Patterns on state_dict keys, and the parameter groups of a train section
(`param_groups = [group("layer*", lr=1e-4)]`): shared by the lowering that checks them, the
PyTorch backend that writes create_optimizer, and the trainer that freezes layers."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class Group:
    """One parameter group: the keys its patterns match take its options."""

    patterns: tuple[str, ...]
    options: tuple[tuple[str, float], ...]
    line: int

    def __repr__(self) -> str:  # as the IR text shows it: the spec's own spelling
        args = [f'"{p}"' for p in self.patterns] + [f"{k}={v!r}" for k, v in self.options]
        return f"group({', '.join(args)})"


def matches(key: str, pattern: str) -> bool:
    """A glob on the key, or on the module the key lies in (`layer1` covers `layer1.0.bn1.x`)."""
    return fnmatchcase(key, pattern) or fnmatchcase(key, pattern + ".*")
