"""Line layout of the generated source, as ruff format (black's style) lays it out: a statement
longer than the line limit is split at its last bracket, its contents on one indented line if
they fit, else one element a line with a trailing comma."""

from __future__ import annotations

import textwrap

WIDTH = 100


def wrap(code: str, indent: int, comment: str = "") -> list[str]:
    """`code` at `indent` spaces, as lines; `comment` is kept only where it fits."""
    pad = " " * indent
    if comment and len(pad) + len(code) + 4 + len(comment) <= WIDTH:
        return [f"{pad}{code}  # {comment}"]
    if len(pad) + len(code) <= WIDTH:
        return [pad + code]
    split = _last_bracket(code)
    if split is None:
        return [pad + code]
    head, body, tail = split
    inner = " " * (indent + 4)
    literal = head.rstrip().endswith(("= (", "= [", "= {", "return (")) or head in "([{"
    parts = _top_level(body)
    fits = len(inner) + len(body) <= WIDTH and not _has_magic_comma(body)
    if fits and not (literal and len(parts) > 1):
        return [pad + head, inner + body, pad + tail]
    clauses = _comprehension(body) if len(parts) == 1 else None
    if clauses is not None:  # `[X for _ in range(n)]`: the element, then its `for` clause
        element, loop = clauses
        return [pad + head, *wrap(element, indent + 4), inner + loop, pad + tail]
    if len(parts) == 1:  # one argument: split it in turn, no trailing comma
        return [pad + head, *wrap(parts[0], indent + 4), pad + tail]
    lines = [pad + head]
    for part in parts:
        lines += wrap(part + ",", indent + 4)
    return [*lines, pad + tail]


def _has_magic_comma(body: str) -> bool:
    return body.rstrip().endswith(",")


def _last_bracket(code: str) -> tuple[str, str, str] | None:
    """(head ending in the opening bracket, contents, closing bracket and what follows) for the
    bracket pair that closes last."""
    closing = {")": "(", "]": "[", "}": "{"}
    end = len(code.rstrip()) - 1
    while end >= 0 and code[end] not in closing:
        end -= 1
    if end < 0:
        return None
    depth, i, in_str = 0, end, None
    while i >= 0:
        ch = code[i]
        if in_str:
            in_str = None if ch == in_str else in_str
        elif ch in "\"'":
            in_str = ch
        elif ch in closing:
            depth += 1
        elif ch in "([{":
            depth -= 1
            if depth == 0:
                if i == end - 1:
                    return None  # an empty pair: nothing to split
                return code[: i + 1], code[i + 1 : end], code[end:]
        i -= 1
    return None


def _outside(body: str):
    """The positions of `body` outside any bracket or string it opens."""
    depth, in_str = 0, None
    for i, ch in enumerate(body):
        if in_str:
            in_str = None if ch == in_str else in_str
        elif ch in "\"'":
            in_str = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            yield i


def _comprehension(body: str) -> tuple[str, str] | None:
    """(element, `for ...` clauses) of a comprehension's contents, split at its first
    top-level `for`; None if `body` is not one."""
    for i in _outside(body):
        if body.startswith(" for ", i):
            return body[:i], body[i + 1 :]
    return None


def _top_level(body: str) -> list[str]:
    """The comma-separated parts of a bracket's contents (commas inside brackets or strings do
    not split)."""
    parts, start = [], 0
    for i in _outside(body):
        if body[i] == ",":
            parts.append(body[start:i].strip())
            start = i + 1
    last = body[start:].strip()
    return [p for p in [*parts, last] if p]


def docstring(text: str, indent: int) -> list[str]:
    """A docstring of `text` (paragraph lines kept), wrapped to the line limit."""
    pad = " " * indent
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').strip()
    lines: list[str] = []
    for para in text.split("\n"):
        lines += textwrap.wrap(para, WIDTH - indent - 3, break_long_words=False) or [""]
    if len(lines) == 1 and len(pad) + len(lines[0]) + 6 <= WIDTH:
        return [f'{pad}"""{lines[0]}"""']
    lines[0] = '"""' + lines[0]
    out = [pad + line if line else "" for line in lines]
    if len(out[-1]) + 3 <= WIDTH:
        out[-1] += '"""'
    else:
        out.append(pad + '"""')
    return out
