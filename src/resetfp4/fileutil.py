"""Small file helpers shared across the package."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte pieces (model files are GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def what_is(path: Path) -> str:
    """What is at ``path`` when it is not a regular file, for error messages ("... is X, not a
    file")."""
    if path.is_dir():
        return "a directory"
    if path.is_symlink() and not path.exists():
        return "a broken symbolic link"
    return "a device, pipe or socket"


def check_new_folder_path(out_dir: str | Path, flag: str, give: str, choose: str) -> Path:
    """The checks every output folder flag shares, before any slow work: ``out_dir`` is not
    empty, not an existing file, and not under a file. ``give`` completes "``flag`` is empty;
    give ...", ``choose`` ends the existing-file message ("choose ..."). Nothing is written."""
    if not str(out_dir).strip():
        raise ValueError(f"{flag} is empty; give {give}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} is an existing file, not a folder; choose {choose}")
    above = next((a for a in out.parents if a.exists()), None)
    if not out.exists() and above is not None and not above.is_dir():
        raise ValueError(f"{flag} {out} cannot be created: {above} is a file, not a folder; choose another")
    return out


def make_folder(out_dir: str | Path, what: str) -> Path:
    """Create ``out_dir`` (and its parents); an OS refusal becomes an error naming ``what`` and
    the path."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the {what} {out} ({e.strerror or e}); choose another") from e
    return out


def finite_or_null(x: Any) -> Any:
    """``x`` with every NaN / inf float (in nested dicts, lists and tuples) replaced by ``None``:
    strict JSON has no NaN or Infinity (``json.dumps`` would write bare ``NaN``)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite_or_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_null(v) for v in x]
    return x
