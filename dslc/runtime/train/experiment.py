"""A run is one experiment: runs/NAME/experiment.json records what the run was started with
(the spec's text and its SHA-256, and those of each file it imports, the --param values, the
data files' fingerprints, how the validation set was chosen, and the dslc version), and
`--resume` refuses to continue a run with anything of it changed: resuming after editing the
learning rate (in the spec or in a file it imports) or dropping --val would otherwise silently
mix two experiments in one run. `--force-resume` continues anyway, with a warning per change,
and records the changes."""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

from dslc.errors import DslcError
from dslc.runtime.train.checkpoint import atomic_write
from dslc.version import __version__

FILE = "experiment.json"
_CHUNK = 1 << 20


def record(
    spec_path: str,
    source: str,
    params: dict[str, Any],
    data: str,
    val: str | None,
    val_split: float | None,
    imported: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What makes this run the experiment it is; `imported`: the text of each file the spec
    imports, by the path shown for it."""
    files = [
        {"path": path, "sha256": _sha256(text.encode()), "text": text}
        for path, text in (imported or {}).items()
    ]
    return {
        "dslc_version": __version__,
        "spec": {
            "path": spec_path,
            "sha256": _sha256(source.encode()),
            "text": source,
            "imports": files,
        },
        "params": dict(sorted(params.items())),
        "data": {"train": fingerprint(data), "val": fingerprint(val) if val else None},
        "val_split": val_split,
    }


def fingerprint(text: str) -> dict[str, Any]:
    """The data as given (`--data a:b`, a directory, a file) and each of its files' size and
    SHA-256, by name relative to what was given: the same bytes moved elsewhere still match."""
    paths = [Path(p) for p in text.split(":")] if ":" in text else [Path(text)]
    files = []
    for path in paths:
        found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in found:
            name = str(file.relative_to(path)) if path.is_dir() else file.name
            files.append({"name": name, "bytes": file.stat().st_size, "sha256": _file_hash(file)})
    return {"given": text, "files": files}


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as err:
        raise DslcError(f"cannot read data {path}: {err.strerror}") from None
    return h.hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save(out: Path, rec: dict[str, Any]) -> None:
    text = json.dumps(rec, indent=2, sort_keys=True) + "\n"
    atomic_write(out / FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load(out: Path) -> dict[str, Any] | None:
    """The run's record, or None for a run that has none (started by an older dslc)."""
    path = out / FILE
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DslcError(f"--resume: cannot read {path}: {err}") from None
    if not isinstance(rec, dict):
        raise DslcError(f"--resume: {path} is not a dslc experiment record")
    return rec


def changes(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the run's record and this command, in words (empty: nothing)."""
    found = []
    spec_then, spec_now = then.get("spec") or {}, now["spec"]
    if spec_then.get("sha256") != spec_now["sha256"]:
        found.append(
            f"the spec changed ({_first_change(spec_then.get('text', ''), spec_now['text'])})"
        )
    elif "imports" in spec_then:  # a record of an older dslc has none: nothing to compare
        found += _imports_changed(spec_then["imports"], spec_now["imports"])
    if then.get("params") != now["params"]:
        found.append(
            f"--param values {_params(then.get('params'))} then, {_params(now['params'])} now"
        )
    data_then = then.get("data") or {}
    for key, flag in (("train", "--data"), ("val", "--val")):
        old, new = data_then.get(key), now["data"][key]
        if _files(old) != _files(new):
            found.append(f"{flag} {_data(old)} then, {_data(new)} now")
    if then.get("val_split") != now["val_split"]:
        found.append(f"--val-split {then.get('val_split')} then, {now['val_split']} now")
    return found


def _imports_changed(then: list[dict[str, Any]], now: list[dict[str, Any]]) -> list[str]:
    """The imported files that changed: in the order they were loaded, which the unchanged
    spec fixes (their paths may differ, as the spec was named from another folder)."""
    if len(then) != len(now):
        return [f"the spec imports {len(now)} files, {len(then)} then"]
    return [
        f"the imported file {b['path']} changed ({_first_change(a['text'], b['text'])})"
        for a, b in zip(then, now, strict=True)
        if a["sha256"] != b["sha256"]
    ]


def _first_change(old: str, new: str) -> str:
    """The first line that differs, old and new: the edit a user most likely forgot."""
    a, b = old.splitlines(), new.splitlines()
    for tag, i, _, j, _ in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            was = a[i].strip() if i < len(a) else "(end of file)"
            is_ = b[j].strip() if j < len(b) else "(end of file)"
            return f"line {j + 1}: `{was}` then, `{is_}` now"
    return "its hash differs"


def _params(values: Any) -> str:
    if not values:
        return "none"
    return " ".join(f"{k}={v}" for k, v in values.items())


def _files(fp: dict[str, Any] | None) -> Any:
    return None if fp is None else [(f["name"], f["bytes"], f["sha256"]) for f in fp["files"]]


def _data(fp: dict[str, Any] | None) -> str:
    if fp is None:
        return "none"
    short = ", ".join(f"{f['name']} {f['sha256'][:12]}" for f in fp["files"][:3])
    return f"{fp['given']} ({short})"


def check_resume(out: Path, now: dict[str, Any], force: bool, say: Any, write: bool) -> None:
    """Refuse to resume the run in `out` into another experiment, unless `force`; with force,
    warn about each change and (when `write`) record it."""
    then = load(out)
    if then is None:
        say(f"warning: {out} records no experiment ({FILE}); resuming unchecked")
        if write:
            save(out, now)
        return
    try:
        found = changes(then, now)
    except (KeyError, TypeError, AttributeError, IndexError):  # edited by hand, or torn
        found = [f"{out / FILE} does not read as an experiment record"]
    if then.get("dslc_version") != __version__:
        say(f"note: {out} was started by dslc {then.get('dslc_version')}, this is {__version__}")
    if not found:
        return
    if not force:
        raise DslcError(
            f"--resume: the run in {out} is another experiment: " + "; ".join(found),
            hint="resume with the spec, --param values and data the run was started with "
            f"(recorded in {out / FILE}), give another --out, "
            "or --force-resume to continue anyway",
        )
    for change in found:
        say(f"warning: --force-resume: {change}")
    if write:
        forced = then.get("forced")
        history = [*(forced if isinstance(forced, list) else []), {"changes": found}]
        save(out, {**now, "forced": history})
